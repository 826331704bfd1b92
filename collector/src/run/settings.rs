//! The effective configuration of `kotel run`: the file (or the defaults), then the `OTEL_*`
//! environment, then the flags; and the exporter's TLS settings from it.

use super::*;

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
    if let Some(p) = &args.probes {
        c.probes = p.0.clone();
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
    if let Some(out) = &args.out {
        cfg.export.out_dir = out.clone();
    }
    if let Some(q) = args.queue_bytes {
        cfg.export.queue_bytes = q;
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
