//! How hard the store pushes a commit to disk: a setting of the server, honoured by
//! every store back end.

/// How hard a commit pushes data to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: survives power loss (the default).
    #[default]
    Full,
    /// fsync at WAL checkpoints only: survives a process crash, may lose the last
    /// commits on power loss.
    Normal,
}
