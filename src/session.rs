//! A session: its folder on disk, its git worktree, and the actor that drives it.
//!
//! - [`name`]: names and folder resolution;
//! - [`store`]: reading and (under the worker lock) writing the folder;
//! - [`untrusted`]: reading a file the agent may have replaced (no links, pipes or floods);
//! - [`worktree`]: the git worktree the agent works in;
//! - [`context`]: what each agent attempt is told;
//! - [`profile`]: which model profile an attempt runs with;
//! - [`open`]: opening a session for a worker (folder, lock, state);
//! - [`recover`]: taking over from a worker that died mid-attempt;
//! - `budget`: what a session spends, and the check of its budget before each attempt;
//! - `adopt`: attaching to an attempt a remote engine still runs after a daemon restart;
//! - [`person`]: a person's commands applied to the folder;
//! - [`actor`]: the SessionActor and its phase machine (its decisions in `outcome.rs`).

pub mod actor;
mod adopt;
mod budget;
pub mod context;
pub mod name;
pub mod open;
mod outcome;
pub mod person;
pub mod profile;
pub mod recover;
pub mod store;
mod trace;
pub mod untrusted;
pub mod worktree;

pub use store::{SessionFolder, SessionStore, StoreError};
