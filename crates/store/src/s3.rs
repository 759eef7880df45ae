//! S3 and S3-compatible stores (AWS, Aliyun OSS, Tencent COS, MinIO, Garage, Ceph).
//!
//! `s3://BUCKET/PREFIX` names the repository. Endpoint, region, addressing style and credentials
//! come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`,
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`), which override `[repository.s3]` in coffer.toml.
//!
//! No conditional request is ever sent: every object is named after its content, so writing one
//! twice is harmless, and correctness never rests on `If-None-Match` (Garage 2.5, for one, accepts
//! it and overwrites anyway). Retries live in [`crate::Retrying`], around this store, so the
//! store's own client is told not to retry.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use serde::Deserialize;

use crate::{Backend, BackendError, RetryPolicy, Retrying, StoreBackend};

/// `[repository.s3]` in coffer.toml. Every field has an environment variable that wins over it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `AWS_ENDPOINT_URL`: e.g. `https://oss-cn-hangzhou.aliyuncs.com`, `http://127.0.0.1:3900`.
    pub endpoint: Option<String>,
    /// `AWS_REGION` (default `us-east-1`).
    pub region: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// A file holding the secret key (`AWS_SECRET_ACCESS_KEY` wins over it).
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// `AWS_ALLOW_HTTP`: allow a plain-http endpoint (loopback test servers).
    pub allow_http: Option<bool>,
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`: bucket in the host name instead of the path.
    /// Path style is the default; it is what MinIO, Garage and Ceph answer out of the box.
    pub virtual_hosted_style: Option<bool>,
    /// `COFFER_S3_UPLOADS`: packs uploaded at once (default 4). Each holds one pack in memory.
    pub uploads: Option<usize>,
    /// `COFFER_S3_MULTIPART_MIB`: objects above this many MiB go up in parts (default 32).
    pub multipart_threshold_mib: Option<usize>,
    /// `COFFER_S3_PART_MIB`: part size in MiB (default 16; S3 wants at least 5).
    pub part_size_mib: Option<usize>,
    /// `COFFER_S3_TIMEOUT_SECS`: one request's time limit (default 120).
    pub timeout_secs: Option<u64>,
    /// `COFFER_S3_RETRIES`: attempts after the first for a transient error (default 6).
    pub retries: Option<u32>,
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl S3Config {
    pub fn uploads(&self) -> usize {
        env("COFFER_S3_UPLOADS")
            .or(self.uploads)
            .unwrap_or(4)
            .clamp(1, 64)
    }

    fn multipart_threshold(&self) -> usize {
        env("COFFER_S3_MULTIPART_MIB")
            .or(self.multipart_threshold_mib)
            .unwrap_or(32)
            .max(5)
            << 20
    }

    fn part_size(&self) -> usize {
        env("COFFER_S3_PART_MIB")
            .or(self.part_size_mib)
            .unwrap_or(16)
            .max(5)
            << 20
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(
            env("COFFER_S3_TIMEOUT_SECS")
                .or(self.timeout_secs)
                .unwrap_or(120)
                .max(1),
        )
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: env("COFFER_S3_RETRIES").or(self.retries).unwrap_or(6),
            ..RetryPolicy::default()
        }
    }
}

/// Splits `s3://bucket/some/prefix` into the bucket and the prefix (without slashes at its ends).
pub fn parse_location(location: &str) -> Result<(String, String), BackendError> {
    let rest = location.strip_prefix("s3://").unwrap_or(location);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(BackendError::Open {
            location: location.to_string(),
            message: "no bucket: write s3://BUCKET or s3://BUCKET/PREFIX".into(),
        });
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// An app's bucket, as a plugin names it: only these credentials, never the `AWS_*` variables
/// (those are the repository's).
pub fn open_bucket(
    endpoint: &str,
    region: &str,
    bucket: &str,
    prefix: &str,
    access_key_id: &str,
    secret_access_key: &str,
) -> Result<Arc<dyn Backend>, BackendError> {
    let location = format!("{}/{bucket}/{prefix}", endpoint.trim_end_matches('/'));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s3 = base_builder(&S3Config::default())
        .with_endpoint(endpoint)
        .with_region(if region.is_empty() {
            "us-east-1"
        } else {
            region
        })
        .with_bucket_name(bucket)
        .with_access_key_id(access_key_id)
        .with_secret_access_key(secret_access_key)
        .with_allow_http(endpoint.starts_with("http://"))
        .build()
        .map_err(|e| BackendError::Open {
            location: location.clone(),
            message: e.to_string(),
        })?;
    // Through the same retrying wrapper as the repository's store: a bucket's objects meet the
    // same flaky networks.
    let cfg = S3Config::default();
    let store = finish(s3, prefix.trim_matches('/'), location, &cfg)?;
    Ok(Arc::new(Retrying::new(store, cfg.retry_policy())))
}

/// What every S3 store of coffer's shares: no retries inside (the wrapper retries), no
/// conditional writes, the configured timeouts.
fn base_builder(cfg: &S3Config) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_region("us-east-1")
        .with_conditional_put(S3ConditionalPut::Disabled)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        })
        // Client options first: setting them replaces allow_http and the rest set before.
        .with_client_options(
            ClientOptions::new()
                .with_timeout(cfg.timeout())
                .with_connect_timeout(Duration::from_secs(10)),
        )
}

fn finish(
    s3: object_store::aws::AmazonS3,
    prefix: &str,
    location: String,
    cfg: &S3Config,
) -> Result<Arc<StoreBackend>, BackendError> {
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix))
    };
    let mut backend = StoreBackend::new(store, location)?;
    backend.multipart_threshold = cfg.multipart_threshold();
    backend.part_size = cfg.part_size();
    backend.parallelism = cfg.uploads();
    Ok(Arc::new(backend))
}

pub fn open(location: &str, cfg: &S3Config) -> Result<Arc<StoreBackend>, BackendError> {
    let (bucket, prefix) = parse_location(location)?;
    // TLS for https endpoints; a second call finds it installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let open_err = |message: String| BackendError::Open {
        location: location.to_string(),
        message,
    };
    let mut b = base_builder(cfg).with_bucket_name(&bucket);
    if let Some(v) = &cfg.endpoint {
        b = b.with_endpoint(v);
    }
    if let Some(v) = &cfg.region {
        b = b.with_region(v);
    }
    if let Some(v) = &cfg.access_key_id {
        b = b.with_access_key_id(v);
    }
    if let Some(f) = &cfg.secret_access_key_file {
        let s = std::fs::read_to_string(f)
            .map_err(|e| open_err(format!("reading {}: {e}", f.display())))?;
        b = b.with_secret_access_key(s.trim());
    }
    if let Some(v) = cfg.allow_http {
        b = b.with_allow_http(v);
    }
    if let Some(v) = cfg.virtual_hosted_style {
        b = b.with_virtual_hosted_style_request(v);
    }
    // The standard variables win over the file, as with every AWS tool.
    for (k, v) in std::env::vars() {
        if !k.starts_with("AWS_") || k == "AWS_BUCKET" || k == "AWS_BUCKET_NAME" {
            continue;
        }
        if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            b = b.with_config(key, v);
        }
    }
    check_plain_http(&b).map_err(open_err)?;
    let s3 = b.build().map_err(|e| open_err(e.to_string()))?;
    finish(s3, &prefix, location.to_string(), cfg)
}

/// A plain-http endpoint needs an explicit yes; without it every request would fail with
/// object_store's bare "builder error", retried as if the network were down. Judged on the
/// builder's own settings, after coffer.toml and the `AWS_*` variables were applied to it.
fn check_plain_http(b: &AmazonS3Builder) -> Result<(), String> {
    let allowed = b
        .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"));
    match b.get_config_value(&AmazonS3ConfigKey::Endpoint) {
        Some(e) if e.to_ascii_lowercase().starts_with("http://") && !allowed => Err(format!(
            "the endpoint {e} is plain http: set AWS_ALLOW_HTTP=true (or allow_http = true under [repository.s3]) to allow it, or use https"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_into_bucket_and_prefix() {
        assert_eq!(
            parse_location("s3://b/x/y/").unwrap(),
            ("b".into(), "x/y".into())
        );
        assert_eq!(parse_location("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(parse_location("s3:///x").is_err());
    }
}
