//! Whose an error is. Every library error of the workspace says which kind it is, and the
//! `pipeline` binary maps kinds to exit codes in one place.

/// Whose mistake (or misfortune) an error is, and so what the user does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The pipeline file, its SQL, the key, a list or field the account lacks: fix and rerun.
    Config,
    /// The profile data: a value that cannot be read, cast or sent.
    Data,
    /// SendGrid or the network failed, or gave up after retries: rerun later.
    Remote,
    /// The local disk: a state, rejects or output file could not be written or read.
    Io,
    /// Another run of the same export holds its lock.
    Busy,
    /// A bug in pipeline.
    Internal,
}

/// An error that knows whose it is.
pub trait Classified: std::error::Error {
    fn kind(&self) -> ErrorKind;
}
