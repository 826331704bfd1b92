//! The sidecar end to end on 127.0.0.1:0: a tonic client renders, the artifact URL serves a
//! valid PNG/SVG over HTTP; bad ids, malformed and oversize bodies get 400/413; over-limit
//! gRPC requests get INVALID_ARGUMENT, oversize gRPC messages OUT_OF_RANGE (tonic 0.14).

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kotel_proto::render::v1::renderer_client::RendererClient;
use kotel_proto::render::v1::{Format, RenderResponse};
use kotel_render::server::{start, ServerConfig};
use kotel_render::{HeatmapOptions, Limits, StoreConfig};
use prost::Message;

async fn server(dir: &std::path::Path, max_request_bytes: u64) -> kotel_render::server::Server {
    start(ServerConfig {
        grpc: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        store_dir: dir.to_path_buf(),
        public_url: None,
        store: StoreConfig::default(),
        limits: Limits {
            max_request_bytes,
            ..Limits::default()
        },
        heatmap: HeatmapOptions {
            trace_url_template: "http://localhost:16686/trace/{trace_id}".into(),
        },
        tls: None,
    })
    .await
    .unwrap()
}

async fn http(method: &str, url: &str, body: Vec<u8>) -> (u16, String, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_render_then_http_get() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), 4 << 20).await;
    let mut client = RendererClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();

    let mut req = common::heatmap_request(60, 64);
    req.formats = vec![Format::Svg as i32, Format::Png as i32];
    let resp = client
        .render_heatmap(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.artifacts.len(), 2);
    let (svg, png) = (&resp.artifacts[0], &resp.artifacts[1]);
    assert_eq!(svg.id, png.id);
    assert_eq!(svg.id.len(), 64);
    assert_eq!(svg.media_type, "image/svg+xml");
    assert_eq!(png.media_type, "image/png");
    assert_eq!((png.width, png.height), (1000, 400));
    assert_eq!(
        png.url,
        format!("http://{}/artifacts/{}.png", srv.http_addr, png.id)
    );
    assert!(png.content.is_empty());

    let (status, ctype, body) = http("GET", &png.url, vec![]).await;
    assert_eq!((status, ctype.as_str()), (200, "image/png"));
    assert!(body.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(body.len() as u64, png.size_bytes);
    let (status, ctype, body) = http("GET", &svg.url, vec![]).await;
    assert_eq!((status, ctype.as_str()), (200, "image/svg+xml"));
    common::element_names(std::str::from_utf8(&body).unwrap());

    // Same request again: same id, bytes included on request.
    req.include_bytes = true;
    let again = client.render_heatmap(req).await.unwrap().into_inner();
    assert_eq!(again.artifacts[1].id, png.id);
    assert_eq!(again.artifacts[1].content.len() as u64, png.size_bytes);

    // Flame graph, SVG by default.
    let flame = client
        .render_flame(common::flame_request(50))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(flame.artifacts.len(), 1);
    let (status, ctype, _) = http("GET", &flame.artifacts[0].url, vec![]).await;
    assert_eq!((status, ctype.as_str()), (200, "image/svg+xml"));

    // The report page links them.
    let base = format!("http://{}", srv.http_addr);
    let (status, ctype, body) = http("GET", &format!("{base}/"), vec![]).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"));
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains(&format!("artifacts/{}.png", png.id)));

    // Unknown and bad ids.
    let unknown = "0".repeat(64);
    assert_eq!(
        http("GET", &format!("{base}/artifacts/{unknown}.svg"), vec![])
            .await
            .0,
        404
    );
    for bad in ["..%2F..%2Fetc%2Fpasswd", "abc.svg", "x.png", "%2e%2e.svg"] {
        assert_eq!(
            http("GET", &format!("{base}/artifacts/{bad}"), vec![])
                .await
                .0,
            400,
            "{bad}"
        );
    }

    // Over-limit content: INVALID_ARGUMENT naming the limit.
    let mut big = common::heatmap_request(1001, 1);
    big.formats.clear();
    let err = client.render_heatmap(big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("heatmap columns is 1001"),
        "{}",
        err.message()
    );
    let mut bad = common::heatmap_request(2, 4);
    bad.scale = 99;
    let err = client.render_heatmap(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("scale 99"));
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_bodies_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), 64 << 10).await;
    let base = format!("http://{}", srv.http_addr);

    let mut req = common::heatmap_request(10, 40);
    req.formats = vec![Format::Png as i32];
    let (status, ctype, body) =
        http("POST", &format!("{base}/v1/heatmap"), req.encode_to_vec()).await;
    assert_eq!((status, ctype.as_str()), (200, "application/x-protobuf"));
    let resp = RenderResponse::decode(body).unwrap();
    let (status, _, png) = http("GET", &resp.artifacts[0].url, vec![]).await;
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG"));

    // Malformed protobuf.
    let (status, _, body) = http("POST", &format!("{base}/v1/flame"), vec![0xff, 0xff, 0xff]).await;
    assert_eq!(status, 400);
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("not a valid protobuf"));
    // Over a content limit: 400 with the limit's name.
    let mut flame = common::flame_request(3);
    flame.stacks[0].stack = vec!["f"; 600].join(";");
    let (status, _, body) = http("POST", &format!("{base}/v1/flame"), flame.encode_to_vec()).await;
    assert_eq!(status, 400);
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("folded stack depth"));
    // Oversize body: 413.
    let huge = common::flame_request(5_000).encode_to_vec();
    assert!(huge.len() > 64 << 10);
    let (status, _, body) = http("POST", &format!("{base}/v1/flame"), huge.clone()).await;
    assert_eq!(status, 413);
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("request bytes"));
    // Oversize gRPC message: OUT_OF_RANGE from tonic's decoder.
    let mut client = RendererClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();
    let err = client
        .render_flame(common::flame_request(5_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    srv.shutdown();
}
