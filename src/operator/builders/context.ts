// What builders need beyond the HotStandbyCluster itself: facts about the
// operator's own installation, passed in so builders stay pure.

export interface BuildContext {
  /** The operator's own image; the agent sidecar runs it unless spec.agent.image is set. */
  agentImage: string;
  /** The chart's ClusterRole for agents, bound per cluster by a RoleBinding. */
  agentClusterRole: string;
  /** Recorded on the StatefulSets (not their pod templates, so an upgrade alone restarts nothing). */
  operatorVersion?: string;
}
