/**
 * The request bodies of `keel serve`'s API v1 as TypeBox schemas: one definition gives both
 * the runtime check (a 400 naming the field) and the TypeScript type. The step report mirrors
 * src/control/types.ts (the controller checks its own invariants on top).
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ON_SPIKE } from '../control/types.ts';

const Int = (min = 0) => Type.Integer({ minimum: min });
const Num = Type.Number();
const NumOrNull = Type.Union([Type.Number(), Type.Null()]);

const StepReportSchema = Type.Object(
  {
    v: Type.Literal(1),
    step: Int(1),
    attempt: Int(0),
    loss: NumOrNull,
    grad_norm: NumOrNull,
    nonfinite: Type.Object({ loss: Type.Boolean(), grad: Type.Boolean() }, { additionalProperties: false }),
    lr: NumOrNull,
    tokens: Int(0),
    batch: Int(1),
    data: Type.Tuple([Num, Num]),
    noise: Type.Optional(Type.Object({ g_small_sq: Num, g_big_sq: Num, b_small: Num, b_big: Num }, { additionalProperties: false })),
    diag: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    late: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

const PolicySchema = Type.Object(
  {
    on_spike: Type.Union(ON_SPIKE.map((s) => Type.Literal(s))),
    spike_window: Type.Optional(Int(2)),
    spike_threshold: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    spike_jump: Type.Optional(Type.Number({ minimum: 0 })),
    spike_min_rise: Type.Optional(Type.Number({ minimum: 0 })),
    max_skips: Type.Optional(Int(0)),
    rollback_steps: Type.Optional(Int(1)),
    skip_batches: Type.Optional(Int(0)),
    max_rollbacks: Type.Optional(Int(0)),
    lr_cut: Type.Optional(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 })),
    max_lr_cuts: Type.Optional(Int(0)),
    batch_ramp: Type.Optional(Type.String({ maxLength: 200 })),
    lr_rule: Type.Optional(Type.String({ maxLength: 20 })),
    b_noise: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  },
  { additionalProperties: false },
);

const RunFactsSchema = Type.Object(
  {
    steps: Int(1),
    batch: Int(1),
    micro_batch: Int(1),
    seq_len: Int(1),
    params: Int(1),
    eps: Type.Optional(Type.Number({ minimum: 0 })),
  },
  { additionalProperties: false },
);

export const CreateRunSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200 }),
    config: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    policy: PolicySchema,
    run: RunFactsSchema,
    /** Continue the newest run of this name instead of starting a new one (a restarted job). */
    resume: Type.Optional(Type.Boolean()),
    /** The run decides for itself (keel train --serve) and posts its decisions to /log. */
    mirror: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

/** A decision a mirrored run made itself (src/control/types.ts; the fields the dashboard reads are checked). */
const DecisionSchema = Type.Object(
  {
    v: Type.Literal(1),
    seq: Int(0),
    step: Int(1),
    attempt: Int(0),
    kind: Type.Union(['proceed', 'skip', 'rollback', 'set_lr', 'set_batch', 'stop'].map((k) => Type.Literal(k))),
    apply: Type.Boolean(),
    reason: Type.String({ maxLength: 2000 }),
  },
  { additionalProperties: true },
);

export const LogSchema = Type.Object(
  {
    rows: Type.Array(Type.Object({ report: StepReportSchema, decision: DecisionSchema }, { additionalProperties: false }), { minItems: 1, maxItems: 1000 }),
  },
  { additionalProperties: false },
);

export const EvalSchema = Type.Object(
  {
    step: Int(0),
    metrics: Type.Record(Type.String({ maxLength: 100 }), Type.Number(), { minProperties: 1, maxProperties: 100 }),
  },
  { additionalProperties: false },
);

export const ReportsSchema = Type.Object(
  {
    reports: Type.Array(StepReportSchema, { minItems: 1, maxItems: 1000 }),
  },
  { additionalProperties: false },
);

export const CheckpointSchema = Type.Object(
  {
    step: Int(0),
    data: Num,
    path: Type.Optional(Type.String({ maxLength: 4096 })),
  },
  { additionalProperties: false },
);

export type CreateRun = Static<typeof CreateRunSchema>;
export type Reports = Static<typeof ReportsSchema>;
export type CheckpointBody = Static<typeof CheckpointSchema>;
export type Log = Static<typeof LogSchema>;
export type EvalBody = Static<typeof EvalSchema>;

/** The first problem with `value` against `schema` as "field: message", or null when it conforms. */
export function firstError(schema: TSchema, value: unknown): string | null {
  if (Value.Check(schema, value)) return null;
  const e = Value.Errors(schema, value).First();
  if (!e) return 'invalid body';
  const field = e.path === '' ? 'body' : e.path.slice(1).replaceAll('/', '.');
  return `${field}: ${e.message}`;
}
