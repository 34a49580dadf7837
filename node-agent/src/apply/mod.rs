//! Host configuration: `driftless apply`. Policies are applied in file order, each task decided
//! (planned against live state) and then acted on, below a confined host root.
//!
//! - [`engine`]: the execution model (order, `when`, `notify` handlers, `--only`/`--skip`,
//!   timeouts, failure handling, `Audit` mode).
//! - [`tasks`]: one module per task type behind the [`tasks::Task`] trait.
//! - [`report`]: what happened, with diffs, secrets redacted.
//! - [`diff`]: unified diffs of content with secrets masked.
//! - [`template`]: minijinja with `facts` and `vars`.
//! - [`root`]: host-root confinement of paths and commands.
//! - [`durable`]: the writes of a policy flushed to disk once per filesystem, at its end.
//! - [`validate`]: template and `when` syntax checks run by `driftless validate` and before any
//!   apply.

pub mod backends;
pub mod diff;
pub mod durable;
pub mod engine;
pub mod report;
pub mod root;
pub mod tasks;
pub mod template;
pub mod validate;

pub use engine::{apply, apply_with, Environment, Options};
pub use report::{ApplyReport, Plan, PolicyReport, Status, TaskReport};
pub use root::Root;
