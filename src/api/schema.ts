// A small builder for OpenAPI v3 (structural) schemas whose TypeScript type is
// inferred from the same expression, so the CRD and the code that reads a
// HotStandbyCluster cannot drift: there is one definition of each field.
//
//   const s = obj({ replicas: int({ minimum: 1, default: 3 }) }, { required: ['replicas'] });
//   type S = Infer<typeof s>;   // { replicas: number }
//   s.json                      // { type: 'object', properties: { replicas: {...} }, required: [...] }

export interface CelRule {
  rule: string;
  message: string;
  /** Used with transition rules (those reading oldSelf): the field path the message is about. */
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

export interface JsonSchema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  additionalProperties?: JsonSchema;
  enum?: ReadonlyArray<string | number>;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  maxProperties?: number;
  pattern?: string;
  format?: string;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-validations'?: CelRule[];
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
}

/** A schema that also carries (at the type level only) the TypeScript type it describes. */
export interface Schema<T> {
  readonly json: JsonSchema;
  /** Phantom: never set; only there for type inference. */
  readonly __type?: T;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

type Common = Pick<JsonSchema, 'description' | 'x-kubernetes-validations'>;

function make<T>(json: JsonSchema): Schema<T> {
  // Drop undefined members so the generated YAML holds only what was said.
  return { json: JSON.parse(JSON.stringify(json)) as JsonSchema };
}

export function str<E extends string = string>(
  o: Common & Pick<JsonSchema, 'minLength' | 'maxLength' | 'pattern' | 'format'> & { enum?: readonly E[]; default?: E } = {},
): Schema<E> {
  return make({ type: 'string', ...o });
}

export function int<E extends number = number>(
  o: Common & Pick<JsonSchema, 'minimum' | 'maximum'> & { enum?: readonly E[]; default?: E } = {},
): Schema<E> {
  return make({ type: 'integer', ...o });
}

export function bool(o: Common & { default?: boolean } = {}): Schema<boolean> {
  return make({ type: 'boolean', ...o });
}

/** An integer or a string such as "25%" (Kubernetes IntOrString). */
export function intOrString(o: Common & { pattern?: string } = {}): Schema<number | string> {
  return make({ 'x-kubernetes-int-or-string': true, ...o });
}

export function arr<T>(
  items: Schema<T>,
  o: Common & Pick<JsonSchema, 'minItems' | 'maxItems' | 'x-kubernetes-list-type' | 'x-kubernetes-list-map-keys'> & { default?: T[] } = {},
): Schema<T[]> {
  return make({ type: 'array', items: items.json, ...o });
}

/** string → string map (labels, annotations, nodeSelector). */
export function stringMap(o: Common & { maxProperties?: number } = {}): Schema<Record<string, string>> {
  return make({ type: 'object', additionalProperties: { type: 'string' }, ...o });
}

/**
 * An object kept as written: for Kubernetes core shapes (probes, affinity,
 * resources) the API server already validates where they are used.
 */
export function loose(o: Common = {}): Schema<Record<string, unknown>> {
  return make({ type: 'object', 'x-kubernetes-preserve-unknown-fields': true, ...o });
}

type Props = Record<string, Schema<unknown>>;
type ObjectType<P extends Props, R extends keyof P> = { [K in R]: Infer<P[K]> } & { [K in Exclude<keyof P, R>]?: Infer<P[K]> };

/**
 * `defaulted: true` gives the object a default made of its fields' defaults,
 * so an omitted section still gets them (the API server applies a default
 * only where the parent object exists, and checks rules against the default
 * as written: it must be complete).
 */
export function obj<P extends Props, R extends keyof P & string = never>(
  properties: P,
  o: Common & { required?: readonly R[]; default?: Record<string, unknown>; defaulted?: boolean } = {},
): Schema<ObjectType<P, R>> {
  const { required, defaulted, ...rest } = o;
  const json = Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, v.json]));
  return make({
    type: 'object',
    properties: json,
    ...(required && required.length > 0 ? { required: [...required] } : {}),
    ...(defaulted ? { default: defaultsOf(json) } : {}),
    ...rest,
  });
}

/** The object a schema's defaults make: each field's default, nested objects' defaults within. */
export function defaultsOf(properties: Record<string, JsonSchema>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(properties)) {
    if (v.default !== undefined) out[k] = v.default;
  }
  return out;
}

/**
 * A copy of `value` with the schema's defaults filled in, the way the API
 * server defaults a structural schema: top down, a missing field with a
 * default gets it, then defaults apply inside every field that is present.
 */
export function applyDefaults<T>(schema: JsonSchema, value: T): T {
  if (Array.isArray(value)) return (schema.items ? value.map((v: unknown) => applyDefaults(schema.items!, v)) : structuredClone(value)) as T;
  if (value === null || typeof value !== 'object' || !schema.properties) return structuredClone(value);
  const out: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  for (const [key, prop] of Object.entries(schema.properties)) {
    if (out[key] === undefined && prop.default !== undefined) out[key] = structuredClone(prop.default);
    if (out[key] !== undefined) out[key] = applyDefaults(prop, out[key]);
  }
  return out as T;
}
