//! OTLP/HTTP to one collector: spans posted as opentelemetry-proto's messages over a
//! connection of their own (rustls for https://), and the collector's answer read.
//! Batching, timing and counting exports is export.rs's business.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::config::TraceConfig;
use super::span::text;
use crate::error::describe;
use crate::pg::tls::Roots;

/// The most of a collector's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One collector, and what goes with every export.
pub(super) struct Collector {
    /// Where spans are posted.
    pub(super) endpoint: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// rustls for https://; the error of a certificate file that went bad since start.
    tls: Option<Result<TlsConnector, String>>,
    /// What every export holds but its spans.
    template: ResourceSpans,
}

impl Collector {
    /// The collector `config` names, with its headers, roots and resource.
    pub(super) fn new(config: &TraceConfig) -> Collector {
        let attributes = config.resource.iter().map(|(key, value)| text(key, value));
        let scope = InstrumentationScope {
            name: "task-api".to_owned(),
            version: crate::VERSION.to_owned(),
            ..InstrumentationScope::default()
        };
        let template = ResourceSpans {
            resource: Some(Resource { attributes: attributes.collect(), ..Resource::default() }),
            scope_spans: vec![ScopeSpans { scope: Some(scope), ..ScopeSpans::default() }],
            schema_url: String::new(),
        };
        let https = config.endpoint.scheme_str() == Some("https");
        Collector {
            endpoint: config.endpoint.clone(),
            headers: config.headers.0.clone(),
            tls: https.then(|| connector(&config.roots)),
            template,
        }
    }

    /// Posts `spans` as one export; how many the collector rejected, or why it failed.
    pub(super) async fn post(&self, spans: Vec<Span>) -> Result<usize, String> {
        // An IPv6 address without its brackets; the port checked at start, or the scheme's.
        let host = self.endpoint.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.endpoint.port_u16();
        let port = port.unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|err| format!("connecting to {host}:{port}: {err}"))?;
        tcp.set_nodelay(true).ok();
        let mut export = self.template.clone();
        export.scope_spans[0].spans = spans;
        let body = ExportTraceServiceRequest { resource_spans: vec![export] };
        let body = body.encode_to_vec();
        let (status, answer) = match &self.tls {
            None => self.send(tcp, body).await?,
            Some(Err(err)) => return Err(err.clone()),
            Some(Ok(tls)) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| format!("'{host}' is not a TLS server name"))?;
                let tls = tls.connect(name, tcp).await;
                let stream = tls.map_err(|err| format!("TLS with {host}: {}", describe(&err)))?;
                self.send(stream, body).await?
            }
        };
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            return Err(format!("the collector answered {status}: {text:?}"));
        }
        // An empty or undecodable answer is a full success: the status says so.
        let rejected = ExportTraceServiceResponse::decode(answer)
            .ok()
            .and_then(|response| response.partial_success)
            .map_or(0, |partial| partial.rejected_spans.max(0));
        Ok(usize::try_from(rejected).unwrap_or(usize::MAX))
    }

    /// One HTTP/1.1 request on `io`: the status, and the answer's first bytes.
    async fn send<T>(&self, io: T, body: Vec<u8>) -> Result<(hyper::StatusCode, Bytes), String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(io)).await;
        let (mut sender, connection) = handshake.map_err(|err| describe(&err))?;
        let uri = &self.endpoint;
        let mut request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(HOST, uri.authority().map_or("", |a| a.as_str()))
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, concat!("task-api/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| format!("request: {err}"))?;
        request.headers_mut().extend(self.headers.iter().cloned().map(|(n, v)| (Some(n), v)));
        // `sender` moved in, so that the connection ends once the answer is read.
        let exchange = async move {
            let response = sender.send_request(request).await.map_err(|err| describe(&err))?;
            let status = response.status();
            let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await;
            let answer = answer.map_err(|err| format!("reading the answer: {err}"))?;
            Ok((status, answer.to_bytes()))
        };
        // Polled together; a timeout drops both, which closes the connection.
        let (answer, ended) = tokio::join!(exchange, connection);
        answer.map_err(|err| ended.err().map_or(err, |ended| describe(&ended)))
    }
}

/// rustls for an https:// collector: the compiled-in roots, or
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`'s.
fn connector(roots: &Roots) -> Result<TlsConnector, String> {
    let roots = crate::pg::tls::root_store(roots)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS set-up: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(tls)))
}
