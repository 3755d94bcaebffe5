//! The data lake (README: the lake): what a line is (`line`), how lines become gzip objects
//! (`batcher`), and where objects go (`store`).

mod batcher;
mod line;
mod store;

pub use batcher::{Batcher, Limits, Ready, gzip_lines};
pub use line::{Line, record_line, reject_line};
pub use store::{LakeStore, PutOutcome, S3Settings, s3_client};
