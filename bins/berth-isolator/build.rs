//! Sets `BERTH_VERSION` for `--version` (see `bins/git_rev.rs`).

include!("../git_rev.rs");
