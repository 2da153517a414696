//! Moving an app's data off LeanCloud.
//!
//! - [`import`]: `confab import`, an export directory into a store;
//! - [`layout`]: that directory;
//! - [`lean`]: LeanCloud's record shapes;
//! - [`files`]: message files on LeanCloud's file domains;
//! - `read` and `sort`: bounded reading and sorting of the files.

pub mod files;
pub mod import;
pub mod layout;
pub mod lean;
mod read;
mod sort;

pub use import::{ImportError, ImportOptions, ImportReport, import};
pub use sort::SortError;
