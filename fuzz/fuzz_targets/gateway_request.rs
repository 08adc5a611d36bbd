//! Gateway request decoding: the protobuf of every request message a gateway's gRPC services
//! take, then what the gateway does with it before any I/O — a broadcast's tx decoded and its
//! listings' CIDs parsed (`Tx.Broadcast`'s blob check), a read's path and data parsed into a
//! query (`Query.Read`), CIDs and addresses parsed, and a prediction batch run through the
//! `Predictor` (`Models.Predict`) of the fixture MLP and its ONNX export.
//!
//! Input: a selector byte (the message type, in the order of `decode` below), then the message
//! bytes. Properties: no panic; a decoded message re-encodes to bytes that decode to the same
//! message, with `encoded_len` their length and (no map fields) re-encoding a fixed point; a
//! parsed CID or query prints back to itself; an accepted prediction batch gives one prediction
//! (a known class) per row the tabular reader reads, and one probability per class and row.
//! (The mTLS certificate check is the `certificate` target: the gateway runs the same rule.)

#![no_main]

use std::fmt::Debug;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use neurodata_abci::address::Address;
use neurodata_abci::query::Query;
use neurodata_abci::tx::Tx;
use neurodata_crypto::cid::Cid;
use neurodata_fuzz as fx;
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;
use neurodata_tabular::{Document, Format};
use neurodata_trainer::model::Model;
use neurodata_trainer::predict::Predictor;
use prost::Message;

fn predictor() -> &'static Predictor {
    static P: OnceLock<Predictor> = OnceLock::new();
    P.get_or_init(|| {
        let bytes = fx::model_bytes("mlp_logistic");
        let model = Model::from_bytes(bytes).expect("fixture model");
        let onnx = neurodata_trainer::onnx::export(&model).expect("export");
        Predictor::load(bytes, &onnx).expect("fixture predictor")
    })
}

/// Decodes `M`; checks the re-encoding round trip.
fn decode<M: Message + Default + PartialEq + Debug>(bytes: &[u8], fixed_point: bool) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let again = m.encode_to_vec();
    assert_eq!(again.len(), m.encoded_len());
    let back = M::decode(again.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(back, m, "decode(encode(m)) != m");
    if fixed_point {
        assert_eq!(back.encode_to_vec(), again, "re-encoding is not a fixed point");
    }
    Some(m)
}

fn cid(text: &str) {
    if let Ok(cid) = text.parse::<Cid>() {
        assert_eq!(cid.to_string().parse::<Cid>().ok(), Some(cid), "a CID prints back to itself");
    }
}

fn broadcast(req: gw::BroadcastRequest) {
    let _ = (req.mode(), req.timeout_ms);
    let _ = Tx::decode(&req.tx, &fx::tx_limits());
    let Ok(envelope) = pb::Tx::decode(req.tx.as_slice()) else {
        return;
    };
    let Ok(body) = pb::TxBody::decode(envelope.body.as_slice()) else {
        return;
    };
    for m in body.messages {
        if let Some(pb::message::Action::RegisterDataset(r)) = m.action {
            cid(&r.cid);
        }
    }
}

fn read(req: gw::ReadRequest) {
    let Ok(q) = Query::parse(&req.path, &req.data) else {
        return;
    };
    let _ = (q.proof(), q.record_type());
    assert_eq!(Query::parse(q.path(), &q.data()).ok(), Some(q), "a query prints back to itself");
}

fn predict(req: gw::PredictRequest) {
    // The gateway's `batch_format`: unspecified reads as CSV.
    let format = match pb::DataFormat::try_from(req.format) {
        Ok(pb::DataFormat::Unspecified | pb::DataFormat::Csv) => Format::Csv,
        Ok(pb::DataFormat::JsonLines) => Format::JsonLines,
        Ok(pb::DataFormat::JsonArray) => Format::JsonArray,
        Err(_) => return,
    };
    let p = predictor();
    let Ok(prediction) = p.predict(&req.rows, format) else {
        return;
    };
    let rows = Document::parse(&req.rows, format)
        .and_then(|d| d.row_count())
        .expect("a batch the predictor read, the tabular reader reads");
    assert_eq!(prediction.predictions.len() as u64, rows);
    assert_eq!(
        prediction.probabilities.len() as u64,
        rows * p.classes().len() as u64
    );
    for label in &prediction.predictions {
        assert!(p.classes().contains(label), "prediction {label:?} is not a class");
    }
}

fuzz_target!(init: fx::seed_mode("gateway_request", fx::seeds::gateway_request), |data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 17 {
        0 => decode::<gw::BroadcastRequest>(bytes, true).map(broadcast),
        1 => decode::<gw::ReadRequest>(bytes, true).map(read),
        2 => decode::<gw::LightBlockRequest>(bytes, true).map(drop),
        3 => decode::<gw::StateQuery>(bytes, true).map(drop),
        4 => decode::<gw::AddressQuery>(bytes, true).map(|q| {
            if let Some(a) = Address::from_slice(&q.address) {
                assert_eq!(a.0.as_slice(), q.address.as_slice());
            }
        }),
        5 => decode::<gw::OrgQuery>(bytes, true).map(drop),
        6 => decode::<gw::ProposalQuery>(bytes, true).map(drop),
        7 => decode::<gw::IdQuery>(bytes, true).map(drop),
        8 => decode::<gw::DatasetsQuery>(bytes, true).map(drop),
        9 => decode::<gw::PurchasesQuery>(bytes, true).map(drop),
        10 => decode::<gw::PreviewQuery>(bytes, true).map(drop),
        // A map field: prost's HashMap encodes in no fixed order.
        11 => decode::<gw::SubscribeRequest>(bytes, false).map(drop),
        12 => decode::<gw::UploadChunk>(bytes, true).map(|c| cid(&c.expected_cid)),
        13 => decode::<gw::DownloadRequest>(bytes, true).map(|d| cid(&d.cid)),
        14 => decode::<gw::DepositKeyRequest>(bytes, true).map(|d| cid(&d.cid)),
        15 => decode::<gw::InstallModelRequest>(bytes, true).map(drop),
        _ => decode::<gw::PredictRequest>(bytes, true).map(predict),
    };
});
