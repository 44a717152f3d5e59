import * as t from "io-ts";

/**
 * An optional field that adds no level to the error path (io-ts intersections and unions of
 * `undefined` would add an index key or a second problem).
 */
export function optional<C extends t.Mixed>(c: C): t.Type<t.TypeOf<C> | undefined, t.OutputOf<C> | undefined, unknown> {
  return new t.Type<t.TypeOf<C> | undefined, t.OutputOf<C> | undefined, unknown>(
    c.name,
    (u): u is t.TypeOf<C> | undefined => u === undefined || c.is(u),
    (u, ctx) => (u === undefined ? t.success(undefined) : c.validate(u, ctx)),
    (a) => (a === undefined ? undefined : c.encode(a)),
  );
}

