//! The `enrich` transform: who a pid is. Process, container, pod and host metadata read from
//! `/proc`, cgroups and the Kubernetes API become one OTLP Resource per process, with a bounded
//! cache in front of `/proc`; the `--cgroup` filter is resolved here too.

pub mod cgroup;
pub mod container;
mod host;
pub mod k8s;
pub mod proc;
mod process_cache;
mod process_info;
mod resource_attributes;
pub mod resources;
pub mod semconv;

pub use host::HostInfo;
pub use process_cache::{CacheStats, ProcessCache, DEAD_PROCESS_TTL};
pub use process_info::{ProcessInfo, ResourceOptions};
pub(crate) use resource_attributes::percent_decode;
pub use resource_attributes::{parse_resource_attributes, EnrichError};
