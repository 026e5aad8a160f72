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
  /**
   * Renews the lease while it is held; `release` stops renewing it. `onLost` runs when a renewal
   * finds the lease gone (another instance took the work over): its attempt must do nothing more.
   */
  readonly hold: (lease: HeldLease, onLost?: () => void) => Effect.Effect<void>
  readonly release: (lease: HeldLease) => Effect.Effect<void>
}

/**
 * Keeps this instance's leases alive while their work runs, by renewing every few seconds those
 * that are close to expiring. Leases are short, so a killed instance's updates and calls are taken
 * over within LEASE; a live one never loses work that merely runs long (a slow handler, a 429 wait).
 */
export const makeLeaseRenewal = <E>(
  /** Renews those of `leases` close to expiring; answers the lease ids no longer held at all. */
  renew: (leases: ReadonlyArray<HeldLease>) => Effect.Effect<ReadonlyArray<string>, E>
): Effect.Effect<LeaseRenewal, never, Scope.Scope> =>
  Effect.gen(function*() {
    const held = new Map<string, { readonly lease: HeldLease; readonly onLost: (() => void) | undefined }>()
    const renewFailed = repeatedWarning("renewing leases failed; retrying")
    const renewAll = Effect.suspend(() => held.size === 0 ? Effect.succeed([]) : renew([...held.values()].map((entry) => entry.lease)))
    yield* renewAll.pipe(
      Effect.tap(() => renewFailed.recovered),
      Effect.flatMap((lost) =>
        Effect.forEach(lost, (leaseId) => {
          const entry = held.get(leaseId)
          if (entry?.onLost === undefined) return Effect.void
          held.delete(leaseId)
          entry.onLost()
          return Effect.logWarning(`the lease of ${entry.lease.id} was taken over by another instance; its attempt here does nothing more`)
        }, { discard: true })
      ),
      Effect.catchCause(renewFailed.warn),
      Effect.repeat(Schedule.spaced(RENEW_EVERY)),
      Effect.forkScoped
    )
    return {
      hold: (lease, onLost) => Effect.sync(() => void held.set(lease.leaseId, { lease, onLost })),
      release: (lease) => Effect.sync(() => void held.delete(lease.leaseId))
    }
  })
