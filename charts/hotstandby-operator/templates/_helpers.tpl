{{/* Names and labels shared by every template. */}}
{{- define "hso.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hso.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hso.labels" -}}
{{ include "hso.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hotstandby-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "hso.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hso.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hso.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The ClusterRole the operator binds, per cluster namespace, to the agents' ServiceAccount. */}}
{{- define "hso.agentClusterRole" -}}
{{- printf "%s-agent" (include "hso.fullname" .) -}}
{{- end -}}

{{/* The operator's rules on the objects it manages (namespaced part). */}}
{{- define "hso.operatorRules" -}}
- apiGroups: [hotstandby.dev]
  resources: [hotstandbyclusters]
  verbs: [get, list, watch, update, patch]
- apiGroups: [hotstandby.dev]
  resources: [hotstandbyclusters/status]
  verbs: [get, update, patch]
- apiGroups: [hotstandby.dev]
  resources: [hotstandbyclusters/scale]
  verbs: [get]
- apiGroups: [hotstandby.dev]
  resources: [hotstandbyclusters/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps, persistentvolumeclaims, serviceaccounts]
  verbs: [get, list, watch, create, update, patch, delete]
# patch: role labels as a backstop to the agents; delete: rolling updates
# (the masters' StatefulSet uses OnDelete, so the operator orders replacements).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch, delete]
# Read-only: the operator checks that the Secrets a cluster names (etcd TLS,
# Dragonfly password) exist and mounts them; it never writes a Secret.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
# Only the agents' ClusterRole may be bound, and nothing else.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [{{ include "hso.agentClusterRole" . }}]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
