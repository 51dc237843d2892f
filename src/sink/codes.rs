//! ClickHouse's error codes, and what we do about each one.
//!
//! Owns: the one table of every server code the engine decides on, with
//! ClickHouse's name for it (checked against `ErrorCodes.cpp` of 18.16.1
//! and of current ClickHouse: every number here means the same in both
//! where both have it; 439, 497, 516, 574, 735 and 745 are newer than
//! 18.16, and 201 was called QUOTA_EXPIRED there) and
//! the reason for its class. Must not: look at anything but the code (the
//! message text and HTTP status are `SinkError::is_retryable`'s business).
//!
//! A code missing from the table is treated as permanent: the batch goes to
//! the dead-letter directory with the server's message, where an operator
//! sees it, rather than spilling and replaying for ever.

/// What an error code means for the batch that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The same bytes may succeed later (or on another replica).
    Transient,
    /// The same bytes will fail again: never retried in a loop.
    Permanent,
    /// Permanent, and the table is not what the writer thinks (a column
    /// or the table is gone, a type changed): read the schema again.
    Schema,
}

/// One row of [`CODES`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Code {
    pub code: u32,
    /// ClickHouse's name (`ErrorCodes.cpp`).
    pub name: &'static str,
    pub class: Class,
    /// Why it is in this class.
    pub why: &'static str,
}

use Class::{Permanent, Schema, Transient};

macro_rules! codes {
    ($( $code:literal $name:ident $class:ident $why:literal, )*) => {
        /// Sorted by code (a unit test checks it), for a binary search.
        pub(crate) const CODES: &[Code] = &[
            $( Code { code: $code, name: stringify!($name), class: $class, why: $why }, )*
        ];
    };
}

codes! {
    3 UNEXPECTED_END_OF_FILE Permanent "the body ended inside a row: our bytes are wrong, resending them fails the same way",
    8 THERE_IS_NO_COLUMN Schema "a column we send is not in the table",
    10 NOT_FOUND_COLUMN_IN_BLOCK Schema "a column we send is not in the table",
    16 NO_SUCH_COLUMN_IN_TABLE Schema "a column we send is not in the table",
    27 CANNOT_PARSE_INPUT_ASSERTION_FAILED Permanent "the body does not parse as the table's types",
    32 ATTEMPT_TO_READ_AFTER_EOF Permanent "the body is shorter than its rows say",
    33 CANNOT_READ_ALL_DATA Schema "the body is shorter than the table's types need: a type or column changed",
    47 UNKNOWN_IDENTIFIER Schema "a column we name is unknown",
    53 TYPE_MISMATCH Schema "a column's type changed",
    60 UNKNOWN_TABLE Schema "the table is gone (dropped, renamed)",
    62 SYNTAX_ERROR Permanent "the INSERT text is wrong: only our own bug or a bad table name",
    81 UNKNOWN_DATABASE Permanent "the database is gone",
    117 INCORRECT_DATA Schema "a value does not fit the column's type",
    159 TIMEOUT_EXCEEDED Transient "the server ran out of its own time budget (overload)",
    164 READONLY Permanent "the user is read-only (a user setting): no retry changes it",
    173 CANNOT_ALLOCATE_MEMORY Transient "the server is out of memory now",
    192 UNKNOWN_USER Permanent "credentials are wrong",
    193 WRONG_PASSWORD Permanent "credentials are wrong",
    194 REQUIRED_PASSWORD Permanent "credentials are wrong",
    195 IP_ADDRESS_NOT_ALLOWED Permanent "this host may not log in",
    201 QUOTA_EXCEEDED Transient "the user's quota for this interval is used up; it resets (QUOTA_EXPIRED in 18.16)",
    202 TOO_MANY_SIMULTANEOUS_QUERIES Transient "overload: max_concurrent_queries reached",
    203 NO_FREE_CONNECTION Transient "the server's pool to another node is exhausted",
    209 SOCKET_TIMEOUT Transient "a socket timed out on the server's side",
    210 NETWORK_ERROR Transient "the connection broke on the server's side",
    225 NO_ZOOKEEPER Transient "a replicated table has no ZooKeeper session right now",
    236 ABORTED Transient "the server aborted the query (shutdown, a lock timeout)",
    241 MEMORY_LIMIT_EXCEEDED Transient "overload: memory limit for now (a smaller INSERT or a quieter server passes)",
    242 TABLE_IS_READ_ONLY Transient "a replicated table lost ZooKeeper and turned read-only until it is back",
    243 NOT_ENOUGH_SPACE Transient "the server's disk is full until parts merge or an operator frees space",
    244 UNEXPECTED_ZOOKEEPER_ERROR Transient "ZooKeeper failed the block's commit (session expired, connection lost): the server rolled the part back, so a resend stores it once",
    252 TOO_MANY_PARTS Transient "overload: merges are behind; back off",
    279 ALL_CONNECTION_TRIES_FAILED Transient "the server could not reach another node",
    285 TOO_FEW_LIVE_REPLICAS Transient "the quorum's replicas are not up yet",
    286 UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE Transient "the previous quorum write is still being confirmed",
    289 REPLICA_IS_NOT_IN_QUORUM Transient "this replica is catching up with the quorum",
    319 UNKNOWN_STATUS_OF_INSERT Transient "the server lost track of whether it stored the block: resend (deduplication drops a copy)",
    369 ALL_REPLICAS_ARE_STALE Transient "every replica lags behind; they catch up",
    373 SESSION_IS_LOCKED Transient "the session is busy with another query",
    384 PART_IS_TEMPORARILY_LOCKED Transient "a part is locked by a merge or mutation for a moment",
    394 QUERY_WAS_CANCELLED Transient "the server cancelled running queries (a graceful shutdown: every rolling restart)",
    416 REPLICA_STATUS_CHANGED Transient "the replica's status changed during the INSERT (it became or stopped being leader)",
    425 SYSTEM_ERROR Transient "an OS call failed on the server",
    439 CANNOT_SCHEDULE_TASK Transient "the server's thread pool is full",
    473 DEADLOCK_AVOIDED Transient "a table lock timed out (`lock_acquire_timeout`); ClickHouse says: client should retry",
    497 ACCESS_DENIED Permanent "the user lacks the INSERT grant",
    516 AUTHENTICATION_FAILED Permanent "credentials are wrong",
    574 DISTRIBUTED_TOO_MANY_PENDING_BYTES Transient "a Distributed table's queue is full until it drains (newer servers)",
    735 QUERY_WAS_CANCELLED_BY_CLIENT Transient "the request was cut off on its way (a proxy, our own time-out)",
    745 SERVER_OVERLOADED Transient "the server sheds load (newer servers)",
    999 KEEPER_EXCEPTION Transient "ZooKeeper/Keeper connection loss or session expiry",
    1000 POCO_EXCEPTION Transient "a network error inside the server (Poco: timeout, connection reset)",
}

/// What the table says about `code`, when it has it.
pub(crate) fn lookup(code: u32) -> Option<&'static Code> {
    CODES
        .binary_search_by_key(&code, |c| c.code)
        .ok()
        .map(|i| &CODES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_has_no_duplicates() {
        assert!(CODES.windows(2).all(|w| w[0].code < w[1].code));
    }

    #[test]
    fn rolling_restarts_zookeeper_and_overload_are_transient_auth_and_schema_are_not() {
        for transient in [394, 319, 225, 244, 285, 439, 242, 999, 252, 241] {
            assert_eq!(lookup(transient).unwrap().class, Transient, "{transient}");
        }
        for permanent in [164, 516, 192, 62] {
            assert_eq!(lookup(permanent).unwrap().class, Permanent, "{permanent}");
        }
        for schema in [60, 16, 53] {
            assert_eq!(lookup(schema).unwrap().class, Schema, "{schema}");
        }
        assert!(lookup(4242).is_none());
    }
}
