//! OTLP requests for tests, built from the `opentelemetry-proto` types: [`tagged`] requests
//! whose size and identity a test chooses (for queues, exporters and receivers), and [`sdk`]
//! requests shaped like what an instrumented application sends (for linking and the fuzz
//! seeds); plus the attribute and resource builders both use.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub mod sdk;
pub mod tagged;

/// An attribute with an integer value.
pub fn int_attr(key: &str, value: i64) -> KeyValue {
    attr(key, any_value::Value::IntValue(value))
}

/// An attribute with a string value.
pub fn str_attr(key: &str, value: impl Into<String>) -> KeyValue {
    attr(key, any_value::Value::StringValue(value.into()))
}

/// An attribute with any value.
pub fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A resource with these attributes (and nothing else).
pub fn resource(attributes: Vec<KeyValue>) -> Option<Resource> {
    Some(Resource {
        attributes,
        ..Default::default()
    })
}
