//! The conversation: what each message, command and button means in each state of a plan
//! ([`decide`], pure) and every text a user sees ([`copy`]).

pub mod copy;
pub mod decide;
mod turn;
mod worker;

pub use decide::{BREAKER_FAILURES, Decision, Limits, Op, decide};
