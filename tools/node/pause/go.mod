// The pod sandbox's process for the dev cluster's real node: containerd's CRI
// keeps one per pod to hold its namespaces. No image can be pulled here, so the
// dev cluster builds this one and imports it as the sandbox image.
module hotstandby.dev/tools/node/pause

go 1.26.0
