//! Boot artifacts: fetch (path, file://, http(s)://), verify, decompress, cache (owned by the
//! artifacts work, issue 2). See the API contract in the task brief.
