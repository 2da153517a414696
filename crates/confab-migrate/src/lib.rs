//! Moving an app's data off LeanCloud.
//!
//! - [`mod@import`]: `confab import`, an export directory into a store;
//! - [`mod@pull`]: `confab pull`, an app's data from LeanCloud's REST API into one;
//! - [`layout`]: that directory;
//! - [`lean`]: LeanCloud's record shapes;
//! - [`files`]: message files on LeanCloud's file domains;
//! - `read` and `sort`: bounded reading and sorting of the files.

pub mod files;
pub mod import;
pub mod layout;
pub mod lean;
pub mod pull;
mod read;
mod sort;

pub use import::{ImportError, ImportOptions, ImportReport, import};
pub use pull::{PullError, PullOptions, PullReport, pull};
pub use sort::SortError;
