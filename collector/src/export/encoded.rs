//! [`EncodedBatch`]: one OTLP export request as protobuf bytes, with its signal and item count.
//! It is what the export queue holds and what exporters send, so that the queue's byte bound
//! is a bound on the memory it holds (decoded prost messages take several times their encoded
//! size) and a retry sends the same bytes without encoding them again.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{Batch, Signal};

/// What one queued batch costs besides its bytes: the queue entry, the buffer's allocation
/// header and the reference count `Bytes` adds when it is shared. Charged against
/// `export.queue_bytes` with the bytes, so that even empty requests (0 bytes encoded) cannot
/// fill memory without bound.
pub const ENTRY_OVERHEAD: usize = 128;

/// An OTLP export request encoded as protobuf (uncompressed), immutable and cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    signal: Signal,
    items: u64,
    bytes: Bytes,
}

impl EncodedBatch {
    /// Which signal the bytes carry.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// How many items the request holds, counted as [`Batch::items`] counts them.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The protobuf encoding of the request.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// What the batch counts against the queue's byte bound: its encoded length plus
    /// [`ENTRY_OVERHEAD`].
    pub fn queued_size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }

    /// Decodes the request again (the JSON file exporter needs the message). Cannot fail for
    /// bytes made by [`Batch::encode`]; an error means memory corruption or a bug.
    pub fn decode(&self) -> Result<Batch, prost::DecodeError> {
        let b = self.bytes.clone();
        Ok(match self.signal {
            Signal::Traces => Batch::Traces(ExportTraceServiceRequest::decode(b)?),
            Signal::Metrics => Batch::Metrics(ExportMetricsServiceRequest::decode(b)?),
            Signal::Logs => Batch::Logs(ExportLogsServiceRequest::decode(b)?),
            Signal::Profiles => Batch::Profiles(ExportProfilesServiceRequest::decode(b)?),
        })
    }
}

impl Batch {
    /// Encodes the request once, into a buffer of exactly its encoded length.
    pub fn encode(&self) -> EncodedBatch {
        let bytes = match self {
            Batch::Traces(r) => r.encode_to_vec(),
            Batch::Metrics(r) => r.encode_to_vec(),
            Batch::Logs(r) => r.encode_to_vec(),
            Batch::Profiles(r) => r.encode_to_vec(),
        };
        EncodedBatch {
            signal: self.signal(),
            items: self.items(),
            bytes: Bytes::from(bytes),
        }
    }
}

impl From<Batch> for EncodedBatch {
    fn from(batch: Batch) -> EncodedBatch {
        batch.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{logs, metrics, profiles, traces};
    use super::*;

    #[test]
    fn encoding_keeps_signal_items_and_round_trips() {
        for batch in [traces(1, 7), metrics(2, 4), logs(3, 3), profiles(4, 2)] {
            let e = batch.encode();
            assert_eq!(e.signal(), batch.signal());
            assert_eq!(e.items(), batch.items());
            assert_eq!(e.bytes().len(), batch.encoded_len());
            assert_eq!(e.queued_size(), batch.encoded_len() + ENTRY_OVERHEAD);
            assert_eq!(e.decode().unwrap(), batch);
        }
    }

    #[test]
    fn an_empty_request_still_costs_its_entry() {
        let e = Batch::Traces(ExportTraceServiceRequest::default()).encode();
        assert_eq!((e.items(), e.bytes().len()), (0, 0));
        assert_eq!(e.queued_size(), ENTRY_OVERHEAD);
    }
}
