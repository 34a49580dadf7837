//! Opening the S3 bucket an [`S3Target`] names, for every component that writes to S3 (facts
//! snapshots, log batches, audit records).

use driftless_crds::common::S3Target;
use s3::creds::Credentials;
use s3::{Bucket, Region};

/// Why a bucket could not be opened.
#[derive(Debug)]
pub enum OpenError<E> {
    /// A `${...}` reference in the endpoint or the keys did not resolve.
    Expand(E),
    /// A field holds something unusable.
    Invalid {
        /// The `S3Target` field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Opens the bucket: the region (`us-east-1` when unset) at `endpoint` when set, the explicit
/// keys when both are set (else the ambient credentials), path-style URLs when asked.
/// `expand(field, text)` resolves `${secret:...}`/`${env:...}` references the caller's way.
pub fn open<E>(
    target: &S3Target,
    mut expand: impl FnMut(&'static str, &str) -> Result<String, E>,
) -> Result<Box<Bucket>, OpenError<E>> {
    let invalid = |field: &'static str, reason: String| OpenError::Invalid { field, reason };
    let region_name = target.region.clone().unwrap_or_else(|| "us-east-1".into());
    let region = match &target.endpoint {
        Some(endpoint) => Region::Custom {
            region: region_name,
            endpoint: expand("endpoint", endpoint).map_err(OpenError::Expand)?,
        },
        None => region_name
            .parse()
            .map_err(|e| invalid("region", format!("{e}")))?,
    };
    let credentials = match (&target.access_key_id, &target.secret_access_key) {
        (Some(id), Some(key)) => {
            let id = expand("accessKeyId", id).map_err(OpenError::Expand)?;
            let key = expand("secretAccessKey", key).map_err(OpenError::Expand)?;
            Credentials::new(Some(&id), Some(&key), None, None, None)
        }
        _ => Credentials::default(),
    }
    .map_err(|e| invalid("credentials", e.to_string()))?;
    let bucket = Bucket::new(&target.bucket, region, credentials)
        .map_err(|e| invalid("bucket", e.to_string()))?;
    Ok(if target.path_style {
        bucket.with_path_style()
    } else {
        bucket
    })
}
