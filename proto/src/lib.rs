//! zopp's wire protocol: the gRPC service and messages generated from `zopp/v1/zopp.proto`.
//!
//! Holds no logic beyond generated code and the encoded file descriptor (for gRPC reflection).
//! Field compatibility rules live in the .proto file next to each message.

#![allow(clippy::all, missing_docs)]

/// Generated types for package `zopp.v1`.
pub mod v1 {
    tonic::include_proto!("zopp.v1");
}

/// Encoded `FileDescriptorSet` of the zopp protocol, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("zopp_descriptor");

/// Metadata key carrying the calling principal's id.
pub const MD_PRINCIPAL: &str = "x-zopp-principal";
/// Metadata key carrying the request timestamp (unix milliseconds, decimal).
pub const MD_TIMESTAMP: &str = "x-zopp-timestamp";
/// Metadata key carrying the 16-byte request nonce (lowercase hex).
pub const MD_NONCE: &str = "x-zopp-nonce";
/// Metadata key carrying the Ed25519 request signature (lowercase hex).
pub const MD_SIGNATURE: &str = "x-zopp-signature";
