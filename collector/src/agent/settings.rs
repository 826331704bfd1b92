//! The effective configuration of `kotel run`: the file (or the defaults), then the `OTEL_*`
//! environment, then the flags; and the exporter's TLS settings from it.

use std::path::PathBuf;

use super::RunError;
use crate::cli::RunArgs;
use crate::config::Config;
use crate::enrich::parse_resource_attributes;
use crate::export::{Compression, ExportConfig, Protocol, RetryConfig, TlsFile, TlsSettings};
use crate::otlp::metrics::Temporality;

/// The effective configuration: file (or defaults), then `OTEL_*` environment, then flags.
pub fn effective_config(
    args: &RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, ExportConfig), RunError> {
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(attrs) = env("OTEL_RESOURCE_ATTRIBUTES") {
        let pairs = parse_resource_attributes(&attrs)
            .map_err(|e| RunError::Env(format!("OTEL_RESOURCE_ATTRIBUTES: {e}")))?;
        cfg.resource.attributes.extend(pairs);
    }
    let c = &mut cfg.capture;
    if !args.pids.is_empty() {
        c.pids = args.pids.clone();
    }
    if let Some(p) = &args.cgroup {
        c.cgroup = p.clone();
    }
    if let Some(t) = args.span_threshold {
        c.span_threshold = t;
    }
    if let Some(t) = args.sleep_threshold {
        c.sleep_threshold = t.0;
    }
    if let Some(p) = &args.probes {
        c.probes = p.0.clone();
    }
    if args.kernel_threads {
        c.kernel_threads = true;
    }
    if let Some(n) = args.span_budget {
        c.span_budget = n;
    }
    if let Some(b) = args.symbolize_budget {
        c.symbolize_budget = b;
    }
    if let Some(i) = args.interval {
        cfg.metrics.interval = i;
    }
    if let Some(t) = &args.temporality {
        cfg.metrics.temporality = if t == "delta" {
            Temporality::Delta
        } else {
            Temporality::Cumulative
        };
    }
    if let Some(t) = &args.telemetry {
        cfg.telemetry.listen = t.clone();
    }
    if let Some(a) = &args.receiver_grpc {
        cfg.receiver.grpc = a.clone();
    }
    if let Some(a) = &args.receiver_http {
        cfg.receiver.http = a.clone();
    }
    if let Some(w) = args.link_window {
        cfg.link.window = w;
    }
    if let Some(r) = &args.renderer {
        cfg.render.renderer = r.clone();
    }
    if let Some(n) = args.max_pictures {
        cfg.render.max_pictures = n;
    }
    if let Some(b) = args.picture_store_bytes {
        cfg.render.store_max_bytes = b;
    }
    if let Some(b) = args.rotate_bytes {
        cfg.export.rotation.max_bytes = b;
    }
    if let Some(n) = args.rotate_backups {
        cfg.export.rotation.max_backups = n;
    }
    if let Some(out) = &args.out {
        cfg.export.out_dir = out.clone();
    }
    if let Some(q) = args.queue_bytes {
        cfg.export.queue_bytes = q;
    }
    if let Some(p) = args.profiles {
        cfg.profiles.enabled = p;
    }
    cfg.validate()?;

    let e = &cfg.export;
    let mut export = ExportConfig {
        endpoint: (!e.endpoint.is_empty()).then(|| e.endpoint.clone()),
        protocol: if e.protocol == "http/protobuf" {
            Protocol::HttpProtobuf
        } else {
            Protocol::Grpc
        },
        headers: e
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timeout: e.timeout,
        compression: if e.compression == "none" {
            Compression::None
        } else {
            Compression::Gzip
        },
        queue_bytes: e.queue_bytes,
        retry: RetryConfig {
            initial_interval: e.retry.initial_interval,
            multiplier: 2,
            max_interval: e.retry.max_interval,
            max_elapsed_time: e.retry.max_elapsed,
        },
        out_dir: e.out_dir.clone(),
        rotation: e.rotation.rotation(),
        tls: export_tls(&e.tls),
    };
    export
        .apply_env(env)
        .map_err(|e| RunError::Env(e.to_string()))?;
    if let Some(ep) = &args.otlp_endpoint {
        export.endpoint = Some(ep.clone());
    }
    if let Some(p) = &args.otlp_protocol {
        export.protocol = if p == "http/protobuf" {
            Protocol::HttpProtobuf
        } else {
            Protocol::Grpc
        };
    }
    if let Some(q) = args.queue_bytes {
        export.queue_bytes = q;
    }
    if let Some(out) = &args.out {
        export.out_dir = out.clone();
    }
    Ok((cfg, export))
}

/// `[export.tls]` as the exporter takes it: empty paths unset, each named by its field.
pub fn export_tls(t: &crate::config::ExportTlsSettings) -> TlsSettings {
    let file = |path: &PathBuf, field: &'static str| {
        (!path.as_os_str().is_empty()).then(|| TlsFile::new(path.clone(), field))
    };
    TlsSettings {
        ca_file: file(&t.ca_file, "export.tls.ca_file"),
        cert_file: file(&t.cert_file, "export.tls.cert_file"),
        key_file: file(&t.key_file, "export.tls.key_file"),
        insecure: t.insecure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_beat_environment_beats_file() {
        let dir = std::env::temp_dir().join(format!("kotel-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kotel.toml");
        std::fs::write(
            &file,
            "[export]\nendpoint = \"http://file:4317\"\nqueue_bytes = 100000\n",
        )
        .unwrap();
        let mut args = RunArgs {
            config: Some(file.clone()),
            ..Default::default()
        };

        let (_, e) = effective_config(&args, &env_of(&[])).unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("http://file:4317"));
        assert_eq!(e.queue_bytes, 100_000);

        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=kernel"),
        ]);
        let (c, e) = effective_config(&args, &env).unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("http://env:4317"));
        assert_eq!(
            c.resource.attributes.get("team").map(String::as_str),
            Some("kernel")
        );

        args.otlp_endpoint = Some("http://flag:4317".into());
        args.queue_bytes = Some(4096);
        let (_, e) = effective_config(&args, &env).unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("http://flag:4317"));
        assert_eq!(e.queue_bytes, 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_and_picture_flags_beat_the_file() {
        let dir = std::env::temp_dir().join(format!("kotel-cfg-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kotel.toml");
        std::fs::write(
            &file,
            "[export.rotation]\nmax_bytes = 8192\nmax_backups = 4\n\n\
             [render]\nmax_pictures = 7\nstore_max_bytes = 1000\n",
        )
        .unwrap();
        let mut args = RunArgs {
            config: Some(file),
            ..Default::default()
        };
        let (c, e) = effective_config(&args, &env_of(&[])).unwrap();
        assert_eq!((e.rotation.max_bytes, e.rotation.max_backups), (8192, 4));
        assert_eq!((c.render.max_pictures, c.render.store_max_bytes), (7, 1000));

        args.rotate_bytes = Some(0);
        args.rotate_backups = Some(0);
        args.max_pictures = Some(2);
        args.picture_store_bytes = Some(0);
        let (c, e) = effective_config(&args, &env_of(&[])).unwrap();
        assert_eq!(e.rotation, crate::export::Rotation::OFF);
        assert_eq!((c.render.max_pictures, c.render.store_max_bytes), (2, 0));

        args.rotate_bytes = Some(100);
        let err = effective_config(&args, &env_of(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("export.rotation.max_bytes"),
            "{err}"
        );
        args.rotate_bytes = None;
        args.max_pictures = Some(0);
        let err = effective_config(&args, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("render.max_pictures"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn profiles_follow_the_effective_endpoint_unless_told() {
        use crate::config::ProfilesMode;
        let (c, e) = effective_config(&RunArgs::default(), &env_of(&[])).unwrap();
        assert!(c.profiles_enabled(&e), "files mode: on");
        let env = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")]);
        let (c, e) = effective_config(&RunArgs::default(), &env).unwrap();
        assert!(
            !c.profiles_enabled(&e),
            "an endpoint from the environment: off"
        );
        let on = RunArgs {
            profiles: Some(ProfilesMode::On),
            ..Default::default()
        };
        let (c, e) = effective_config(&on, &env).unwrap();
        assert!(c.profiles_enabled(&e), "--profiles on beats auto");
        let off = RunArgs {
            profiles: Some(ProfilesMode::Off),
            ..Default::default()
        };
        let (c, e) = effective_config(&off, &env_of(&[])).unwrap();
        assert!(!c.profiles_enabled(&e), "--profiles off in files mode");
    }

    #[test]
    fn bad_settings_exit_2_naming_what_is_wrong() {
        let args = RunArgs {
            interval: Some(Duration::from_millis(1)),
            ..Default::default()
        };
        let err = effective_config(&args, &env_of(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("metrics.interval"), "{err}");
        let err = effective_config(
            &RunArgs::default(),
            &env_of(&[("OTEL_RESOURCE_ATTRIBUTES", "novalue")]),
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("OTEL_RESOURCE_ATTRIBUTES"),
            "{err}"
        );
        let err = effective_config(
            &RunArgs::default(),
            &env_of(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_TIMEOUT"),
            "{err}"
        );
    }
}
