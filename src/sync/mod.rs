//! Coordination between instances of a service on the kv store: [`Lock`] serialises access to a
//! resource, [`Leader`] elects one instance to do a job. Both work on every kv backend
//! (memory for tests, NATS JetStream KV, Redis) because they need only what [`crate::kv::Store`]
//! offers: create-if-absent with a TTL, compare-and-set on a revision, and watch.
//!
//! **The algorithm** (the same on NATS and Redis): a lease is a kv key holding the holder's id,
//! written with a TTL only if absent. Its revision is the fencing token. The holder renews every
//! third of the TTL with a compare-and-set on its last revision (on NATS, JetStream's
//! expected-last-subject-sequence; on Redis, a Lua script comparing the stored revision), and
//! counts the lease as lost when a renewal is refused, when the key changes under it, or when
//! 90% of the TTL passes since the last renewal it sent. Releasing is a delete conditional on
//! the last revision. A crashed holder's lease expires after the TTL (NATS: the expiry stored
//! with the value; Redis: `PEXPIRE`), and the next contender's create succeeds.
//!
//! Leases guard liveness, fencing tokens guard safety: a holder paused longer than its lease may
//! act late, so a resource that must never see two holders checks that the token it is given
//! is not lower than the highest it has seen.

mod leader;
mod lock;

pub use leader::{Leader, Leadership};
pub use lock::{Lock, LockGuard, DEFAULT_TTL, MIN_TTL};
