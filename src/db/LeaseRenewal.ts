import { Duration, Effect, Schedule, type Scope } from "effect"
import { repeatedWarning } from "../observability/RepeatedWarning.ts"

/** How long a lease lasts unless renewed: a killed instance's work is taken over this long after it died. */
export const LEASE = Duration.seconds(10)
const RENEW_EVERY = Duration.seconds(3)
/** Leases with more than this left are not rewritten: short work never costs a renewal. */
export const RENEW_BELOW = Duration.subtract(LEASE, Duration.sum(RENEW_EVERY, Duration.seconds(1)))

export interface HeldLease {
  readonly id: string
  readonly leaseId: string
}

export interface LeaseRenewal {
  /** Renews the lease while it is held; `release` stops renewing it. */
  readonly hold: (lease: HeldLease) => Effect.Effect<void>
  readonly release: (lease: HeldLease) => Effect.Effect<void>
}

/**
 * Keeps this instance's leases alive while their work runs, by renewing every few seconds those
 * that are close to expiring. Leases are short, so a killed instance's updates and calls are taken
 * over within LEASE; a live one never loses work that merely runs long (a slow handler, a 429 wait).
 */
export const makeLeaseRenewal = <E>(
  renew: (leases: ReadonlyArray<HeldLease>) => Effect.Effect<void, E>
): Effect.Effect<LeaseRenewal, never, Scope.Scope> =>
  Effect.gen(function*() {
    const held = new Map<string, HeldLease>()
    const renewFailed = repeatedWarning("renewing leases failed; retrying")
    yield* Effect.suspend(() => held.size === 0 ? Effect.void : Effect.andThen(renew([...held.values()]), renewFailed.recovered)).pipe(
      Effect.catchCause(renewFailed.warn),
      Effect.repeat(Schedule.spaced(RENEW_EVERY)),
      Effect.forkScoped
    )
    return {
      hold: (lease) => Effect.sync(() => void held.set(lease.leaseId, lease)),
      release: (lease) => Effect.sync(() => void held.delete(lease.leaseId))
    }
  })
