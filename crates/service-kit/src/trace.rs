//! Spans of each hop an event takes (a publish request, a job, a gateway's fan-out), exported
//! over OTLP (HTTP, JSON) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and nothing but ids otherwise. The ids are the
//! W3C trace context's: a hop continues the trace it was given (the request's `traceparent`, the
//! job's, the event's) or starts one, and what it hands on names its own span as the parent.
//! The exporter's other settings are the OpenTelemetry variables (`OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, ...).

use std::sync::OnceLock;

use opentelemetry::{
    trace::{
        Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
        TracerProvider as _,
    },
    Context, KeyValue,
};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, Tracer};

/// The variables that switch export on.
pub const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

static EXPORT: OnceLock<(SdkTracerProvider, Tracer)> = OnceLock::new();

/// Starts the exporter when an endpoint variable is set (once per process; later calls do
/// nothing). The error names the variable that is wrong.
pub fn init(service: &str) -> Result<(), String> {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    if EXPORT.get().is_some() || !ENDPOINT_VARS.iter().any(|v| set(v)) {
        return Ok(());
    }
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .build()
        .map_err(|e| format!("{}: {e}", ENDPOINT_VARS.join(" / ")))?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(name).build())
        .build();
    let tracer = provider.tracer("rakuda-realtime");
    let _ = EXPORT.set((provider, tracer));
    Ok(())
}

/// Exports what is left and stops the exporter (at the end of `main`); bounded by the SDK's
/// export timeout.
pub fn shutdown() {
    if let Some((provider, _)) = EXPORT.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "span export did not finish");
        }
    }
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORT.get().is_some()
}

/// What kind of hop: one that answers a request, one that takes a job or a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request this process answers (`POST /api/realtime/publish`).
    Server,
    /// A job or message this process takes (a BullMQ job, an event fanned out).
    Consumer,
}

/// One hop: its ids (the trace, and its own span as the next hop's parent), and its span while
/// spans are exported. The span ends when the hop is dropped.
#[derive(Debug)]
pub struct Hop {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    span: Option<Span>,
}

impl Hop {
    /// Starts a hop named `name`, continuing `parent` (trace id, span id) or starting a trace.
    pub fn start(
        name: &'static str,
        kind: Kind,
        parent: Option<([u8; 16], [u8; 8])>,
        attributes: &[(&'static str, String)],
    ) -> Hop {
        let Some((_, tracer)) = EXPORT.get() else {
            let random = uuid::Uuid::new_v4().into_bytes();
            let trace_id = parent.map(|p| p.0).unwrap_or(random);
            let span_id: [u8; 8] = uuid::Uuid::new_v4().into_bytes()[..8].try_into().expect("8 bytes");
            return Hop {
                trace_id,
                span_id,
                span: None,
            };
        };
        let cx = match parent {
            Some((trace, span)) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(trace),
                SpanId::from_bytes(span),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let span = tracer
            .span_builder(name)
            .with_kind(match kind {
                Kind::Server => SpanKind::Server,
                Kind::Consumer => SpanKind::Consumer,
            })
            .with_attributes(
                attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(*k, v.clone()))
                    .collect::<Vec<_>>(),
            )
            .start_with_context(tracer, &cx);
        let sc = span.span_context().clone();
        Hop {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            span: Some(span),
        }
    }

    /// The trace id and this hop's span id: the parent of what it hands on.
    pub fn ids(&self) -> ([u8; 16], [u8; 8]) {
        (self.trace_id, self.span_id)
    }

    /// The trace id as 32 lowercase hex digits, as logs name it.
    pub fn trace_id_hex(&self) -> String {
        self.trace_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether this hop is exported as a span (attributes are kept only then).
    pub fn exported(&self) -> bool {
        self.span.is_some()
    }

    /// Adds an attribute (e.g. the event ids once they are known).
    pub fn set(&mut self, key: &'static str, value: String) {
        if let Some(s) = &mut self.span {
            s.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the hop failed, with why.
    pub fn fail(&mut self, why: &str) {
        if let Some(s) = &mut self.span {
            s.set_status(opentelemetry::trace::Status::error(why.to_owned()));
        }
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        if let Some(s) = &mut self.span {
            s.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_a_hop_continues_its_parent_or_starts_a_trace() {
        let parent = ([7; 16], [9; 8]);
        let child = Hop::start("t", Kind::Consumer, Some(parent), &[]);
        assert_eq!(child.ids().0, parent.0, "same trace");
        assert_ne!(child.ids().1, parent.1, "a span of its own");
        let root = Hop::start("t", Kind::Server, None, &[]);
        assert_ne!(root.ids().0, [0; 16]);
        assert_ne!(
            root.ids().0,
            Hop::start("t", Kind::Server, None, &[]).ids().0,
            "a new trace each time"
        );
        assert_eq!(root.trace_id_hex().len(), 32);
    }
}
