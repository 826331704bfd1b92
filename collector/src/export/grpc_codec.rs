//! A tonic codec for OTLP/gRPC calls whose request is already protobuf-encoded: the request
//! side writes the queued bytes as they are, the response side decodes the typed
//! `Export*ServiceResponse` as the generated clients do. It lets the exporter send an
//! [`super::EncodedBatch`] without decoding or re-encoding it.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Sends pre-encoded request bytes and decodes a `R` response.
#[derive(Debug)]
pub(super) struct PreEncoded<R>(PhantomData<fn() -> R>);

impl<R> Default for PreEncoded<R> {
    fn default() -> Self {
        PreEncoded(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Codec for PreEncoded<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = BytesEncoder;
    type Decoder = ResponseDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder(PhantomData)
    }
}

/// Copies the request bytes into the gRPC frame (tonic compresses the frame afterwards).
#[derive(Debug)]
pub(super) struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// Decodes the response message with prost.
#[derive(Debug)]
pub(super) struct ResponseDecoder<R>(PhantomData<fn() -> R>);

impl<R: Message + Default> Decoder for ResponseDecoder<R> {
    type Item = R;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable OTLP response: {e}")))
    }
}
