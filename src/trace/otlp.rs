//! The OTLP protobuf messages task-api sends: our own copies of the subset of
//! opentelemetry-proto's `collector/trace/v1/trace_service.proto`, `trace/v1/trace.proto`,
//! `common/v1/common.proto` and `resource/v1/resource.proto` that we fill, with the same
//! field numbers and types, and the turning of finished spans into one export request.
//! Sending it is export.rs's business.

use super::span::{Finished, Value};
use super::{SpanContext, TraceConfig};

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ExportTraceServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportTracePartialSuccess>,
}

/// `ExportTracePartialSuccess`: what the collector took but refused.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTracePartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `ResourceSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "13")]
    pub links: Vec<Link>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

/// `Span.Link`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Link {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(fixed32, tag = "6")]
    pub flags: u32,
}

/// `Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`: the two kinds we send.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 3")]
    pub value: Option<any_value::Value>,
}

/// `AnyValue`'s `oneof value`.
pub mod any_value {
    /// `string_value` or `int_value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(int64, tag = "3")]
        IntValue(i64),
    }
}

/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: i32 = 2;
/// `SpanFlags`: the low byte holds the W3C trace flags (01: sampled); bit 8 says
/// whether the parent's or link's remoteness is known, bit 9 that it is remote.
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// `OTEL_RESOURCE_ATTRIBUTES` and the rest, as the export's resource.
pub fn resource(config: &TraceConfig) -> Resource {
    Resource {
        attributes: config
            .resource
            .iter()
            .map(|(key, value)| text(key.clone(), value.clone()))
            .collect(),
    }
}

/// One export request holding `spans`, under `resource`.
pub fn request(resource: &Resource, spans: Vec<Finished>) -> ExportTraceServiceRequest {
    let scope = InstrumentationScope {
        name: "task-api".to_owned(),
        version: crate::VERSION.to_owned(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans: spans.into_iter().map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn span(finished: Finished) -> Span {
    let (parent_span_id, flags) = match finished.parent {
        None => (Vec::new(), SAMPLED),
        Some((id, remote)) => {
            let remote = if remote { IS_REMOTE } else { 0 };
            (id.0.to_vec(), SAMPLED | HAS_IS_REMOTE | remote)
        }
    };
    Span {
        trace_id: finished.context.trace_id.0.to_vec(),
        span_id: finished.context.span_id.0.to_vec(),
        parent_span_id,
        flags,
        name: finished.name.text(),
        kind: finished.kind as i32,
        start_time_unix_nano: finished.start_unix_nanos,
        end_time_unix_nano: finished.end_unix_nanos,
        attributes: finished
            .attributes
            .into_iter()
            .map(|(key, value)| match value {
                Value::Static(text) => self::text(key.to_owned(), text.to_owned()),
                Value::Owned(value) => self::text(key.to_owned(), value),
                Value::Int(n) => KeyValue {
                    key: key.to_owned(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(n)),
                    }),
                },
            })
            .collect(),
        links: finished.links.iter().map(link).collect(),
        status: finished.error.map(|message| Status {
            message,
            code: STATUS_ERROR,
        }),
    }
}

/// A link to a request's span: in this process, so not remote.
fn link(to: &SpanContext) -> Link {
    Link {
        trace_id: to.trace_id.0.to_vec(),
        span_id: to.span_id.0.to_vec(),
        flags: SAMPLED | HAS_IS_REMOTE,
    }
}

fn text(key: String, value: String) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::span::{Kind, Name, Statement};
    use crate::trace::{SpanId, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1 as collector;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as TheirValue;
    use prost::Message;

    /// What we encode, decoded by the OpenTelemetry project's own types: the field
    /// numbers and types must agree.
    #[test]
    fn the_official_messages_decode_what_we_send() {
        let context = |n: u8| SpanContext {
            trace_id: TraceId([n; 16]),
            span_id: SpanId([n + 1; 8]),
            sampled: true,
        };
        let finished = Finished {
            context: context(1),
            parent: Some((SpanId([9; 8]), false)),
            kind: Kind::Client,
            name: Name::Db(Statement {
                operation: "SELECT",
                collection: Some("tasks"),
            }),
            start_unix_nanos: 1_000,
            end_unix_nanos: 2_000,
            attributes: vec![
                ("db.system.name", Value::Static("postgresql")),
                ("db.operation.batch.size", Value::Int(3)),
            ],
            links: vec![context(4), context(6)],
            error: Some("23505".into()),
        };
        let resource = Resource {
            attributes: vec![text("service.name".into(), "task-api".into())],
        };
        let bytes = request(&resource, vec![finished]).encode_to_vec();
        let theirs = collector::ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let resource_spans = &theirs.resource_spans[0];
        let attribute = &resource_spans.resource.as_ref().unwrap().attributes[0];
        assert_eq!(attribute.key, "service.name");
        let scope_spans = &resource_spans.scope_spans[0];
        assert_eq!(scope_spans.scope.as_ref().unwrap().name, "task-api");
        let span = &scope_spans.spans[0];
        assert_eq!(span.trace_id, vec![1; 16]);
        assert_eq!(span.span_id, vec![2; 8]);
        assert_eq!(span.parent_span_id, vec![9; 8]);
        assert_eq!(span.flags, 0x101);
        assert_eq!(span.name, "SELECT tasks");
        assert_eq!(span.kind, 3);
        assert_eq!(
            (span.start_time_unix_nano, span.end_time_unix_nano),
            (1_000, 2_000)
        );
        assert_eq!(
            span.attributes[1].value.as_ref().unwrap().value,
            Some(TheirValue::IntValue(3))
        );
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(TheirValue::StringValue("postgresql".into()))
        );
        assert_eq!(span.links.len(), 2);
        assert_eq!(span.links[1].trace_id, vec![6; 16]);
        assert_eq!(span.links[1].span_id, vec![7; 8]);
        let status = span.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "23505"));

        let reply = collector::ExportTraceServiceResponse {
            partial_success: Some(collector::ExportTracePartialSuccess {
                rejected_spans: 5,
                error_message: "too old".into(),
            }),
        };
        let ours = ExportTraceServiceResponse::decode(reply.encode_to_vec().as_slice()).unwrap();
        assert_eq!(ours.partial_success.unwrap().rejected_spans, 5);
    }
}
