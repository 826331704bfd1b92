"""Self-test of the profiles side of the OTLP harness, with no kotel involved: the gRPC and HTTP
receivers take official ``ExportProfilesServiceRequest``s (``v1development``) and resolve their
samples through the dictionary; started without profiles they answer as such receivers do
(gRPC ``UNIMPLEMENTED``, HTTP 404) and count the attempts; OTLP/JSON profiles lines with hex
ids decode into the official classes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2,
    profiles_service_pb2_grpc,
)
from opentelemetry.proto.profiles.v1development import profiles_pb2

import otlp_json
from otlp_http_receiver import PROFILES_PATH, OtlpHttpReceiver
from otlp_receiver import OtlpReceiver, sample_functions, sample_link, sample_type

Request = profiles_service_pb2.ExportProfilesServiceRequest
TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")


def _request() -> profiles_service_pb2.ExportProfilesServiceRequest:
    """One off-CPU profile: 3 ms in nanosleep called from main, linked to one span."""
    d = profiles_pb2.ProfilesDictionary(
        string_table=["", "off_cpu", "nanoseconds", "main", "nanosleep", "/usr/bin/app"],
        mapping_table=[profiles_pb2.Mapping(), profiles_pb2.Mapping(filename_strindex=5)],
        function_table=[
            profiles_pb2.Function(),
            profiles_pb2.Function(name_strindex=3),
            profiles_pb2.Function(name_strindex=4),
        ],
        location_table=[
            profiles_pb2.Location(),
            profiles_pb2.Location(mapping_index=1, lines=[profiles_pb2.Line(function_index=1)]),
            profiles_pb2.Location(mapping_index=1, lines=[profiles_pb2.Line(function_index=2)]),
        ],
        stack_table=[profiles_pb2.Stack(), profiles_pb2.Stack(location_indices=[2, 1])],
        link_table=[profiles_pb2.Link(), profiles_pb2.Link(trace_id=TRACE_ID, span_id=SPAN_ID)],
    )
    profile = profiles_pb2.Profile(
        sample_type=profiles_pb2.ValueType(type_strindex=1, unit_strindex=2),
        samples=[profiles_pb2.Sample(stack_index=1, link_index=1, values=[3_000_000])],
        time_unix_nano=1_700_000_000_000_000_000,
        duration_nano=5_000_000_000,
        profile_id=bytes(range(1, 17)),
    )
    request = Request(dictionary=d)
    request.resource_profiles.add().scope_profiles.add().profiles.append(profile)
    return request


def _check_resolved(records: list) -> None:
    assert len(records) == 1
    record = records[0]
    assert sample_type(record) == ("off_cpu", "nanoseconds")
    sample = record.profile.samples[0]
    assert sample_functions(record.dictionary, sample) == ["nanosleep", "main"]
    assert sample_link(record.dictionary, sample) == (TRACE_ID, SPAN_ID)
    assert list(sample.values) == [3_000_000]


def _export_grpc(receiver: OtlpReceiver) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
        stub = profiles_service_pb2_grpc.ProfilesServiceStub(channel)
        stub.Export(_request(), timeout=10)


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_grpc_receiver_takes_profiles_and_resolves_samples(receiver: OtlpReceiver) -> None:
    _export_grpc(receiver)
    assert receiver.requests("profiles") == [_request()]
    _check_resolved(receiver.profiles())
    assert receiver.counters()["profiles"] == {"calls": 1, "failures": 0, "accepted": 1}


def test_grpc_receiver_without_profiles_answers_unimplemented_and_counts() -> None:
    with OtlpReceiver(profiles=False) as receiver:
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as err:
                _export_grpc(receiver)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert receiver.counters()["profiles"] == {"calls": 2, "failures": 2, "accepted": 0}
        assert receiver.requests("profiles") == []


def test_http_receiver_takes_profiles_in_plaintext() -> None:
    receiver = OtlpHttpReceiver()
    try:
        assert receiver.endpoint.startswith("http://")
        body = _request().SerializeToString()
        assert _post(receiver.endpoint + PROFILES_PATH, body) == 200
        assert receiver.requests("profiles") == [_request()]
        _check_resolved(receiver.profiles())
        assert receiver.posts(PROFILES_PATH) == 1
    finally:
        receiver.close()


def test_http_receiver_without_profiles_answers_404_and_counts() -> None:
    receiver = OtlpHttpReceiver(profiles=False)
    try:
        body = _request().SerializeToString()
        assert _post(receiver.endpoint + PROFILES_PATH, body) == 404
        assert receiver.posts(PROFILES_PATH) == 1
        assert receiver.requests("profiles") == []
    finally:
        receiver.close()


def test_otlp_json_profiles_have_hex_ids_and_round_trip() -> None:
    encoded = otlp_json.to_dict(_request())
    link = encoded["dictionary"]["linkTable"][1]
    assert (link["traceId"], link["spanId"]) == (TRACE_ID.hex(), SPAN_ID.hex())
    profile = encoded["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0]
    assert profile["profileId"] == bytes(range(1, 17)).hex()
    assert otlp_json.parse(json.dumps(encoded), Request) == _request()


def test_otlp_json_profiles_line_as_kotel_writes_it() -> None:
    # 64-bit integers as strings, hex link and profile ids, the empty entry first in each
    # table (what `profiles.jsonl` holds).
    line = (
        '{"resourceProfiles":[{"resource":null,"scopeProfiles":[{"scope":null,"profiles":[{'
        '"sampleType":{"typeStrindex":1,"unitStrindex":2},"samples":[{"stackIndex":1,'
        '"attributeIndices":[],"linkIndex":1,"values":["3000000"],"timestampsUnixNano":[]}],'
        '"timeUnixNano":"1700000000000000000","durationNano":"5000000000","periodType":null,'
        '"period":"0","profileId":"0102030405060708090a0b0c0d0e0f10","droppedAttributesCount":0,'
        '"originalPayloadFormat":"","originalPayload":"","attributeIndices":[]}],'
        '"schemaUrl":""}],"schemaUrl":""}],"dictionary":{'
        '"mappingTable":[{},{"filenameStrindex":5}],'
        '"locationTable":[{},{"mappingIndex":1,"address":"0","lines":[{"functionIndex":1}]},'
        '{"mappingIndex":1,"lines":[{"functionIndex":2,"line":"0","column":"0"}]}],'
        '"functionTable":[{},{"nameStrindex":3},{"nameStrindex":4,"startLine":"0"}],'
        '"linkTable":[{"traceId":"","spanId":""},'
        '{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}],'
        '"stringTable":["","off_cpu","nanoseconds","main","nanosleep","/usr/bin/app"],'
        '"attributeTable":[],"stackTable":[{},{"locationIndices":[2,1]}]}}'
    )
    assert otlp_json.parse(line, Request) == _request()
