// Labels of a cluster's children. The keys every child carries
// (app.kubernetes.io/*, hotstandby.dev/cluster) and the master pod selector
// come from src/lib/labels.ts, which the agent shares.
import { APP_NAME, CLUSTER_LABEL, MANAGED_BY, ROLE_LABEL, ROLE_LEADER, ROLE_STANDBY } from '../../lib/labels.ts';

export type Component = 'master' | 'agent' | 'etcd' | 'dragonfly';

/** Every child's labels: who made it, for which cluster, as which part. */
export function childLabels(cluster: string, component: Component): Record<string, string> {
  return {
    'app.kubernetes.io/name': APP_NAME,
    'app.kubernetes.io/instance': cluster,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/managed-by': MANAGED_BY,
    [CLUSTER_LABEL]: cluster,
  };
}

/**
 * Selector of a component's pods. Never includes the role: a StatefulSet's
 * selector is immutable, and the role moves between pods.
 * For masters it is exactly masterPodSelector() from src/lib/labels.ts.
 */
export function podSelector(cluster: string, component: Component): Record<string, string> {
  return { [CLUSTER_LABEL]: cluster, 'app.kubernetes.io/component': component };
}

/** The leader Service's selector: the one master pod its agent labelled leader. */
export function leaderSelector(cluster: string): Record<string, string> {
  return { [CLUSTER_LABEL]: cluster, [ROLE_LABEL]: ROLE_LEADER };
}

export function standbySelector(cluster: string): Record<string, string> {
  return { [CLUSTER_LABEL]: cluster, [ROLE_LABEL]: ROLE_STANDBY };
}

/** Annotation on master pod templates: a hash of the template, so the operator can tell pods running an outdated one. */
export const TEMPLATE_HASH_ANNOTATION = 'hotstandby.dev/template-hash';
