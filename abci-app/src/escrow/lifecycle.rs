//! The purchase lifecycle as a pure function: [`Purchase::step`] takes a purchase and an
//! [`Input`] and returns the purchase after it and the [`Effect`]s on the rest of the state, or
//! the error that refuses it. Nothing here reads or writes state; the handlers gather the facts an
//! input needs (who signed, whether the provider's org is active, whether a disputed key matches)
//! and `apply` (in `escrow/apply.rs`) carries out the effects.
//!
//! ```text
//! AwaitingKey ──Deliver──▶ KeyDelivered ──Confirm──▶ Confirmed         (provider paid)
//!      │                       ├────────Due────────▶ Released          (provider paid)
//!      │                       └──────Dispute──────▶ WrongKeyRefunded  (buyer refunded)
//!      │ Refund, Due
//!      ▼
//!   Refunded                                                           (buyer refunded)
//! ```
//!
//! Every open purchase has one schedule entry, at its `due_height`; every transition out of an
//! open state removes it, so nothing stays in escrow past its windows.
//!
//! A purchase buys the key of an [`Item`]: a dataset, or a model listing (`crate::models`). A
//! model sale carries its [`Royalty`]s, fixed when it opened: when the owner is paid, each
//! royalty is paid out of the same escrowed price (owner: price - fee - royalties); when the
//! buyer is refunded, the whole price goes back and no royalty is paid.
//!
//! [`Purchase`] is decoded from the stored `pb::Purchase` once, at the storage boundary, and
//! encodes back to exactly the bytes it came from: a record whose fields do not fit its status is
//! corrupt rather than silently rewritten.

use neurodata_crypto::wrap::WrappedKey;
use neurodata_proto::chain::v1 as pb;

use super::{EscrowError, state_key, status_name};
use crate::address::Address;
use crate::amount::Amount;
use crate::state::{StateError, stored_amount};

/// A purchase of a dataset's or a model's key: a sale with its price in escrow, or a key request
/// of a validator, a training job or an evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purchase {
    /// Its id.
    pub id: u64,
    /// What it buys the key of.
    pub item: Item,
    /// Sale or validation request, with the money of a sale.
    pub kind: PurchaseKind,
    /// Who gets the key (and the refund of a sale).
    pub buyer: Address,
    /// The buyer's org: its admins may refund or dispute for the buyer, and a validation request
    /// holds one of its slots.
    pub buyer_org: String,
    /// Who is paid for a sale.
    pub provider: Address,
    /// The org whose providers and admins deliver the key.
    pub provider_org: String,
    /// Height of the block that opened it.
    pub opened_height: u64,
    /// Last height at which the key may be delivered.
    pub key_deadline: u64,
    /// At the end of this block the purchase closes by itself if still open (its schedule entry);
    /// a closed record keeps the last one.
    pub due_height: u64,
    /// Where it is in its lifecycle, with the data of that state.
    pub state: PurchaseState,
    /// A model sale: what the providers of the model's training data are paid when the owner is
    /// paid (empty for everything else). `fee + sum(amounts) <= price` (decoding refuses a
    /// record where it is not).
    pub royalties: Vec<Royalty>,
}

/// What a purchase buys the key of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    /// A dataset (`market`), by id.
    Dataset(u64),
    /// A model listing (`models`), by id: sold, or its key asked for by a validator to attest its
    /// ciphertexts.
    Model(u64),
}

impl Item {
    /// The dataset id, 0 for a model (the stored `dataset_id`).
    pub fn dataset_id(&self) -> u64 {
        match self {
            Item::Dataset(id) => *id,
            Item::Model(_) => 0,
        }
    }

    /// The model listing id, 0 for a dataset (the stored `model_listing`).
    pub fn model_listing(&self) -> u64 {
        match self {
            Item::Dataset(_) => 0,
            Item::Model(id) => *id,
        }
    }
}

/// One data provider's share of a model sale (see `crate::models::royalty` for the rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Royalty {
    /// The dataset the model was trained on.
    pub dataset: u64,
    /// Its provider when the purchase opened (or that provider's successor): who is paid.
    pub to: Address,
    /// The provider's org.
    pub provider_org: String,
    /// How much.
    pub amount: Amount,
}

impl From<&Royalty> for pb::Royalty {
    fn from(r: &Royalty) -> pb::Royalty {
        pb::Royalty {
            dataset_id: r.dataset,
            to: r.to.0.to_vec(),
            provider_org: r.provider_org.clone(),
            amount: r.amount.to_string(),
        }
    }
}

/// What a purchase is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseKind {
    /// A sale: `price` is in escrow until it closes; `fee` of it goes to the reward pool when the
    /// provider is paid. `fee <= price` (decoding refuses a record where it is not).
    Sale {
        /// Held in escrow.
        price: Amount,
        /// The reward pool's part of the price.
        fee: Amount,
    },
    /// A validator's key request: no money moves.
    Validation,
    /// The key for a training job's worker or verifier, opened by the chain: no money moves
    /// and it counts against no quota (the job bounds how many there are).
    Training {
        /// The job.
        job: u64,
    },
    /// The key of a hidden evaluation split for the operator of a validator scoring a model on
    /// it, opened by the chain: no money moves and it counts against no quota (the evaluation's
    /// attestors bound how many there are).
    Evaluation {
        /// The evaluation.
        evaluation: u64,
    },
}

impl PurchaseKind {
    /// The price in escrow (zero for a validation request).
    pub fn price(&self) -> Amount {
        match self {
            PurchaseKind::Sale { price, .. } => *price,
            PurchaseKind::Validation
            | PurchaseKind::Training { .. }
            | PurchaseKind::Evaluation { .. } => Amount::ZERO,
        }
    }

    /// The wire enum.
    pub fn wire(&self) -> pb::PurchaseKind {
        match self {
            PurchaseKind::Sale { .. } => pb::PurchaseKind::Sale,
            PurchaseKind::Validation => pb::PurchaseKind::Validation,
            PurchaseKind::Training { .. } => pb::PurchaseKind::Training,
            PurchaseKind::Evaluation { .. } => pb::PurchaseKind::Evaluation,
        }
    }
}

/// The states of a purchase, one per stored status, each with the data it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurchaseState {
    /// Open: the provider's org may deliver the key until the purchase's `key_deadline`.
    AwaitingKey,
    /// Open: the buyer may confirm or dispute until the purchase is due.
    KeyDelivered(Delivery),
    /// Closed: the buyer confirmed; the provider was paid.
    Confirmed {
        /// The key delivered.
        delivery: Delivery,
        /// Height it closed at.
        closed_height: u64,
    },
    /// Closed: the confirm window passed in silence; the provider was paid.
    Released {
        /// The key delivered.
        delivery: Delivery,
        /// Height it closed at.
        closed_height: u64,
    },
    /// Closed: no key in time; the buyer was refunded.
    Refunded {
        /// Height it closed at.
        closed_height: u64,
    },
    /// Closed: the buyer proved the delivered key wrong and was refunded.
    WrongKeyRefunded {
        /// The key delivered.
        delivery: Delivery,
        /// Height it closed at.
        closed_height: u64,
    },
}

impl PurchaseState {
    /// The stored status.
    pub fn status(&self) -> pb::PurchaseStatus {
        match self {
            PurchaseState::AwaitingKey => pb::PurchaseStatus::AwaitingKey,
            PurchaseState::KeyDelivered(_) => pb::PurchaseStatus::KeyDelivered,
            PurchaseState::Confirmed { .. } => pb::PurchaseStatus::Confirmed,
            PurchaseState::Released { .. } => pb::PurchaseStatus::Released,
            PurchaseState::Refunded { .. } => pb::PurchaseStatus::Refunded,
            PurchaseState::WrongKeyRefunded { .. } => pb::PurchaseStatus::WrongKeyRefunded,
        }
    }

    /// Whether the purchase is open (its money, if any, still in escrow).
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            PurchaseState::AwaitingKey | PurchaseState::KeyDelivered(_)
        )
    }

    /// The key delivered, if one was.
    pub fn delivery(&self) -> Option<&Delivery> {
        match self {
            PurchaseState::KeyDelivered(delivery)
            | PurchaseState::Confirmed { delivery, .. }
            | PurchaseState::Released { delivery, .. }
            | PurchaseState::WrongKeyRefunded { delivery, .. } => Some(delivery),
            PurchaseState::AwaitingKey | PurchaseState::Refunded { .. } => None,
        }
    }

    /// The height it closed at, once closed.
    pub fn closed_height(&self) -> Option<u64> {
        match self {
            PurchaseState::AwaitingKey | PurchaseState::KeyDelivered(_) => None,
            PurchaseState::Confirmed { closed_height, .. }
            | PurchaseState::Released { closed_height, .. }
            | PurchaseState::Refunded { closed_height }
            | PurchaseState::WrongKeyRefunded { closed_height, .. } => Some(*closed_height),
        }
    }
}

/// A key delivered for a purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The data key, wrapped to `key_recipient`'s certificate key.
    pub wrapped_key: WrappedKey,
    /// The provider-org member who delivered it.
    pub delivered_by: Address,
    /// The identity the key was wrapped to (the buyer at delivery), which a dispute is proved
    /// against even after the purchase moved to a successor. `None` only in records delivered
    /// before deliveries named their recipient: then the buyer has not moved since, and is it.
    pub key_recipient: Option<Address>,
    /// Height of the delivery.
    pub height: u64,
}

/// Something that happens to a purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The provider's org delivers the key (the handler checked the signer is of that org).
    Deliver {
        /// The key, wrapped.
        wrapped_key: WrappedKey,
        /// The buyer the provider wrapped it to.
        recipient: Address,
        /// The signer.
        delivered_by: Address,
        /// Height of the block.
        height: u64,
        /// Blocks the buyer has to confirm or dispute (`confirm_blocks`).
        confirm_blocks: u64,
    },
    /// The buyer confirms it got the data (the handler checked the signer is the buyer).
    Confirm {
        /// Height of the block.
        height: u64,
    },
    /// The buyer, or an admin of its org, asks for the price back (the handler checked who).
    Refund {
        /// Height of the block.
        height: u64,
        /// Whether the provider's org is still an active member (a removed one delivers nothing,
        /// so the buyer need not wait out its window).
        provider_org_active: bool,
    },
    /// The buyer, or an admin of its org, revealed the delivered wrapping's shared secret; the
    /// handler verified the proof and opened the wrapping ([`Purchase::delivery_to_dispute`]).
    Dispute {
        /// Height of the block.
        height: u64,
        /// Whether the key inside hashes to the dataset's key commitment.
        key_matches: bool,
    },
    /// The end of a block at which the purchase is scheduled.
    Due {
        /// Height of the block.
        height: u64,
    },
    /// Identity `from` moved to its successor `to`; this purchase is one `from` holds an access
    /// mark of.
    MoveBuyer {
        /// The old identity.
        from: Address,
        /// Its successor.
        to: Address,
    },
    /// Identity `from` moved to its successor `to`; this purchase is open.
    MoveProvider {
        /// The old identity.
        from: Address,
        /// Its successor.
        to: Address,
    },
}

/// What a transition does to the state besides rewriting the purchase record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Moves `amount` from `from` into the escrow account.
    Escrow {
        /// The buyer.
        from: Address,
        /// The price.
        amount: Amount,
    },
    /// Pays `amount` out of escrow to `to` (the provider's share, or the buyer's refund).
    Pay {
        /// Who is paid.
        to: Address,
        /// How much.
        amount: Amount,
    },
    /// Pays the market fee out of escrow into the reward pool.
    Fee {
        /// How much.
        amount: Amount,
    },
    /// Counts a sale in the item's statistics (the dataset's, or the model listing's).
    CountSale,
    /// Counts a paid sale and the provider's share in the item's statistics (a model listing's
    /// also count the royalties the sale paid).
    CountPaid {
        /// Paid to the provider, after the fee (and the royalties).
        revenue: Amount,
    },
    /// Counts a refunded sale in the item's statistics.
    CountRefund,
    /// Counts a royalty paid out of a model sale in the statistics of the dataset it was for.
    CountRoyalty {
        /// The dataset.
        dataset: u64,
        /// The royalty.
        amount: Amount,
    },
    /// Marks `buyer`'s live purchase of the item: access, and no second purchase.
    MarkLive {
        /// The buyer.
        buyer: Address,
    },
    /// Removes `buyer`'s live mark: a refunded buyer loses access and may buy again.
    DropLive {
        /// The buyer.
        buyer: Address,
    },
    /// Counts one more open validation request of `org`.
    TakeValidationSlot {
        /// The requesting validator's org.
        org: String,
    },
    /// Counts one fewer open validation request of `org`.
    FreeValidationSlot {
        /// The requesting validator's org.
        org: String,
    },
    /// Schedules the purchase to close at the end of block `height`.
    Schedule {
        /// The block.
        height: u64,
    },
    /// Removes the purchase's schedule entry at `height`.
    Unschedule {
        /// The block.
        height: u64,
    },
    /// Emits an event about the purchase.
    Emit(Notice),
}

/// The purchase events; `apply` fills in their attributes from the purchase after the transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `purchase.opened`.
    Opened,
    /// `purchase.key_delivered`.
    KeyDelivered,
    /// `purchase.dispute_upheld`.
    DisputeUpheld,
    /// `purchase.closed`.
    Closed,
}

/// A purchase after a step and what the step does to the rest of the state, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The purchase after the step (equal to the one before when the step changes nothing in it).
    pub purchase: Purchase,
    /// Effects on the rest of the state, in the order they happen (events and transfers are
    /// emitted in this order).
    pub effects: Vec<Effect>,
}

/// A purchase about to open, its parties and terms checked by its handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opening {
    /// The next purchase id.
    pub id: u64,
    /// What it buys the key of.
    pub item: Item,
    /// Sale (with its price and fee) or validation request.
    pub kind: PurchaseKind,
    /// The signer.
    pub buyer: Address,
    /// The signer's org.
    pub buyer_org: String,
    /// The dataset's provider (a model's owner).
    pub provider: Address,
    /// The dataset's org (the model's owner org).
    pub provider_org: String,
    /// A model sale's royalties (empty otherwise).
    pub royalties: Vec<Royalty>,
}

impl Opening {
    /// Opens the purchase at `height`: the key is due within `key_delivery_blocks`, and if none
    /// came the purchase refunds itself `confirm_blocks` after that.
    pub fn open(self, height: u64, key_delivery_blocks: u64, confirm_blocks: u64) -> Transition {
        let key_deadline = height + key_delivery_blocks;
        let due_height = key_deadline + confirm_blocks;
        let mut effects = Vec::new();
        if self.kind == PurchaseKind::Validation {
            effects.push(Effect::TakeValidationSlot {
                org: self.buyer_org.clone(),
            });
        }
        effects.extend([
            Effect::MarkLive { buyer: self.buyer },
            Effect::Schedule { height: due_height },
            Effect::Emit(Notice::Opened),
        ]);
        if let PurchaseKind::Sale { price, .. } = self.kind {
            if price > Amount::ZERO {
                effects.push(Effect::Escrow {
                    from: self.buyer,
                    amount: price,
                });
            }
            effects.push(Effect::CountSale);
        }
        Transition {
            purchase: Purchase {
                id: self.id,
                item: self.item,
                kind: self.kind,
                buyer: self.buyer,
                buyer_org: self.buyer_org,
                provider: self.provider,
                provider_org: self.provider_org,
                opened_height: height,
                key_deadline,
                due_height,
                state: PurchaseState::AwaitingKey,
                royalties: self.royalties,
            },
            effects,
        }
    }
}

impl Purchase {
    /// The lifecycle: what `input` does to this purchase, or why it is refused. Every check of
    /// the purchase's state lives here; checks of who signed stay with the handlers.
    pub fn step(&self, input: Input) -> Result<Transition, EscrowError> {
        match input {
            Input::Deliver {
                wrapped_key,
                recipient,
                delivered_by,
                height,
                confirm_blocks,
            } => {
                if self.state != PurchaseState::AwaitingKey {
                    return Err(self.wrong_status("deliver a key for"));
                }
                // The wrapping was made for the buyer the provider saw; if the purchase moved to
                // a successor since, recording it as delivered to the successor would let the
                // buyer's org keep the key (the old identity opens it) and win a dispute (the
                // successor's cannot).
                if recipient != self.buyer {
                    return Err(EscrowError::RecipientNotBuyer {
                        purchase: self.id,
                        buyer: self.buyer.to_hex(),
                    });
                }
                if height > self.key_deadline {
                    return Err(EscrowError::DeliveryWindowClosed {
                        purchase: self.id,
                        deadline: self.key_deadline,
                    });
                }
                let due_height = height + confirm_blocks;
                Ok(Transition {
                    purchase: Purchase {
                        due_height,
                        state: PurchaseState::KeyDelivered(Delivery {
                            wrapped_key,
                            delivered_by,
                            key_recipient: Some(recipient),
                            height,
                        }),
                        ..self.clone()
                    },
                    effects: vec![
                        Effect::Unschedule {
                            height: self.due_height,
                        },
                        Effect::Schedule { height: due_height },
                        Effect::Emit(Notice::KeyDelivered),
                    ],
                })
            }
            Input::Confirm { height } => {
                let PurchaseState::KeyDelivered(delivery) = &self.state else {
                    return Err(self.wrong_status("confirm"));
                };
                Ok(self.close(
                    PurchaseState::Confirmed {
                        delivery: delivery.clone(),
                        closed_height: height,
                    },
                    Vec::new(),
                ))
            }
            Input::Refund {
                height,
                provider_org_active,
            } => {
                if self.state != PurchaseState::AwaitingKey {
                    return Err(self.wrong_status("refund"));
                }
                if height <= self.key_deadline && provider_org_active {
                    return Err(EscrowError::RefundTooEarly {
                        purchase: self.id,
                        deadline: self.key_deadline,
                    });
                }
                Ok(self.close(
                    PurchaseState::Refunded {
                        closed_height: height,
                    },
                    Vec::new(),
                ))
            }
            Input::Dispute {
                height,
                key_matches,
            } => {
                let delivery = self.delivery_to_dispute()?;
                if key_matches {
                    return Err(EscrowError::KeyMatches(self.id));
                }
                Ok(self.close(
                    PurchaseState::WrongKeyRefunded {
                        delivery: delivery.clone(),
                        closed_height: height,
                    },
                    vec![Effect::Emit(Notice::DisputeUpheld)],
                ))
            }
            Input::Due { height } => Ok(match &self.state {
                PurchaseState::AwaitingKey => self.close(
                    PurchaseState::Refunded {
                        closed_height: height,
                    },
                    Vec::new(),
                ),
                PurchaseState::KeyDelivered(delivery) => self.close(
                    PurchaseState::Released {
                        delivery: delivery.clone(),
                        closed_height: height,
                    },
                    Vec::new(),
                ),
                // A purchase drops its entry when it closes; a leftover entry is only removed.
                PurchaseState::Confirmed { .. }
                | PurchaseState::Released { .. }
                | PurchaseState::Refunded { .. }
                | PurchaseState::WrongKeyRefunded { .. } => Transition {
                    purchase: self.clone(),
                    effects: vec![Effect::Unschedule { height }],
                },
            }),
            Input::MoveBuyer { from, to } => {
                let mut purchase = self.clone();
                // A closed purchase keeps the buyer it settled with; its access mark moves in the
                // handler all the same.
                if self.state.is_open() && self.buyer == from {
                    purchase.buyer = to;
                    // The key stays wrapped to `from`: disputes are proved against it.
                    if let PurchaseState::KeyDelivered(delivery) = &mut purchase.state {
                        delivery.key_recipient.get_or_insert(from);
                    }
                }
                Ok(Transition {
                    purchase,
                    effects: Vec::new(),
                })
            }
            Input::MoveProvider { from, to } => {
                let mut purchase = self.clone();
                if self.state.is_open() {
                    if self.provider == from {
                        purchase.provider = to;
                    }
                    // A data provider's royalty follows it to its successor like a sale's price.
                    for royalty in &mut purchase.royalties {
                        if royalty.to == from {
                            royalty.to = to;
                        }
                    }
                }
                Ok(Transition {
                    purchase,
                    effects: Vec::new(),
                })
            }
        }
    }

    /// The delivery a dispute is about, which only a purchase awaiting confirmation has. The
    /// dispute handler needs it to check the proof before it can build [`Input::Dispute`].
    pub fn delivery_to_dispute(&self) -> Result<&Delivery, EscrowError> {
        match &self.state {
            PurchaseState::KeyDelivered(delivery) => Ok(delivery),
            _ => Err(self.wrong_status("dispute")),
        }
    }

    fn wrong_status(&self, action: &'static str) -> EscrowError {
        EscrowError::WrongStatus {
            purchase: self.id,
            status: status_name(self.state.status() as i32),
            action,
        }
    }

    /// What the royalties of a model sale add up to (zero for anything else). Never overflows:
    /// decoding refuses royalties above the price.
    pub fn royalties_total(&self) -> Amount {
        Amount(
            self.royalties
                .iter()
                .fold(0u128, |sum, r| sum.saturating_add(r.amount.0)),
        )
    }

    /// Closes into `closed` after `effects`: every coin in escrow goes to the provider (minus the
    /// fee and a model sale's royalties, each paid to its data provider) when paid, else back to
    /// the buyer, who then loses access; a validation request frees its org's slot; the schedule
    /// entry goes.
    fn close(&self, closed: PurchaseState, mut effects: Vec<Effect>) -> Transition {
        let paid = matches!(
            closed,
            PurchaseState::Confirmed { .. } | PurchaseState::Released { .. }
        );
        match self.kind {
            PurchaseKind::Sale { price, fee } if paid => {
                // `fee + royalties <= price`: the parameters keep market_fee_bps +
                // model_royalty_bps within 10000, and decoding refuses records where it is not.
                let to_provider = Amount(
                    price
                        .0
                        .saturating_sub(fee.0)
                        .saturating_sub(self.royalties_total().0),
                );
                if to_provider > Amount::ZERO {
                    effects.push(Effect::Pay {
                        to: self.provider,
                        amount: to_provider,
                    });
                }
                for royalty in self.royalties.iter().filter(|r| r.amount > Amount::ZERO) {
                    effects.extend([
                        Effect::Pay {
                            to: royalty.to,
                            amount: royalty.amount,
                        },
                        Effect::CountRoyalty {
                            dataset: royalty.dataset,
                            amount: royalty.amount,
                        },
                    ]);
                }
                if fee > Amount::ZERO {
                    effects.push(Effect::Fee { amount: fee });
                }
                effects.push(Effect::CountPaid {
                    revenue: to_provider,
                });
            }
            PurchaseKind::Sale { price, .. } => {
                if price > Amount::ZERO {
                    effects.push(Effect::Pay {
                        to: self.buyer,
                        amount: price,
                    });
                }
                effects.push(Effect::CountRefund);
            }
            PurchaseKind::Validation
            | PurchaseKind::Training { .. }
            | PurchaseKind::Evaluation { .. } => {}
        }
        if !paid {
            effects.push(Effect::DropLive { buyer: self.buyer });
        }
        if self.kind == PurchaseKind::Validation {
            effects.push(Effect::FreeValidationSlot {
                org: self.buyer_org.clone(),
            });
        }
        effects.extend([
            Effect::Unschedule {
                height: self.due_height,
            },
            Effect::Emit(Notice::Closed),
        ]);
        Transition {
            purchase: Purchase {
                state: closed,
                ..self.clone()
            },
            effects,
        }
    }
}

impl TryFrom<pb::Purchase> for Purchase {
    type Error = StateError;

    /// Decodes a stored record; anything that does not fit is state corruption at its key.
    fn try_from(m: pb::Purchase) -> Result<Self, StateError> {
        let key = || state_key::purchase(m.id);
        let corrupt = |reason: String| StateError::Corrupt { key: key(), reason };
        let address = |bytes: &[u8], field: &str| {
            Address::from_slice(bytes).ok_or_else(|| corrupt(format!("{field} is not 32 bytes")))
        };
        let kind = match pb::PurchaseKind::try_from(m.kind) {
            Ok(pb::PurchaseKind::Sale) => {
                let price = stored_amount(&m.price, key)?;
                let fee = stored_amount(&m.fee, key)?;
                if fee > price {
                    return Err(corrupt(format!("fee {fee} above price {price}")));
                }
                PurchaseKind::Sale { price, fee }
            }
            Ok(pb::PurchaseKind::Validation) => PurchaseKind::Validation,
            Ok(pb::PurchaseKind::Training) => PurchaseKind::Training {
                job: m.training_job,
            },
            Ok(pb::PurchaseKind::Evaluation) => PurchaseKind::Evaluation {
                evaluation: m.evaluation,
            },
            _ => return Err(corrupt(format!("unknown kind {}", m.kind))),
        };
        let item = match (m.dataset_id, m.model_listing) {
            (dataset, 0) => Item::Dataset(dataset),
            (0, listing) => Item::Model(listing),
            (dataset, listing) => {
                return Err(corrupt(format!(
                    "both dataset {dataset} and model listing {listing}"
                )));
            }
        };
        let royalties = m
            .royalties
            .iter()
            .map(|r| {
                Ok(Royalty {
                    dataset: r.dataset_id,
                    to: address(&r.to, "royalty recipient")?,
                    provider_org: r.provider_org.clone(),
                    amount: stored_amount(&r.amount, key)?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        // A model is sold, or its key asked for by a validator; only a model sale pays
        // royalties, and never more than its price leaves after the fee.
        match (item, kind) {
            (Item::Model(_), PurchaseKind::Sale { price, fee }) => {
                let total = royalties
                    .iter()
                    .try_fold(fee, |sum, r| sum.checked_add(r.amount));
                if total.is_none_or(|t| t > price) {
                    return Err(corrupt(format!(
                        "fee {fee} and royalties above price {price}"
                    )));
                }
            }
            (Item::Model(_), PurchaseKind::Validation) if royalties.is_empty() => {}
            (Item::Model(_), _) => {
                return Err(corrupt(format!(
                    "a model purchase of kind {}",
                    kind.wire().as_str_name()
                )));
            }
            (Item::Dataset(_), _) if !royalties.is_empty() => {
                return Err(corrupt("royalties on a dataset purchase".into()));
            }
            (Item::Dataset(_), _) => {}
        }
        let delivery = || -> Result<Delivery, StateError> {
            Ok(Delivery {
                wrapped_key: WrappedKey::parse(&m.wrapped_key)
                    .map_err(|e| corrupt(format!("wrapped key: {e}")))?,
                delivered_by: address(&m.delivered_by, "delivered_by")?,
                key_recipient: match m.key_recipient.as_slice() {
                    [] => None,
                    bytes => Some(address(bytes, "key_recipient")?),
                },
                height: m.delivered_height,
            })
        };
        let closed_height = m.closed_height;
        let state = match pb::PurchaseStatus::try_from(m.status) {
            Ok(pb::PurchaseStatus::AwaitingKey) => PurchaseState::AwaitingKey,
            Ok(pb::PurchaseStatus::KeyDelivered) => PurchaseState::KeyDelivered(delivery()?),
            Ok(pb::PurchaseStatus::Confirmed) => PurchaseState::Confirmed {
                delivery: delivery()?,
                closed_height,
            },
            Ok(pb::PurchaseStatus::Released) => PurchaseState::Released {
                delivery: delivery()?,
                closed_height,
            },
            Ok(pb::PurchaseStatus::Refunded) => PurchaseState::Refunded { closed_height },
            Ok(pb::PurchaseStatus::WrongKeyRefunded) => PurchaseState::WrongKeyRefunded {
                delivery: delivery()?,
                closed_height,
            },
            Ok(pb::PurchaseStatus::Unspecified) | Err(_) => {
                return Err(corrupt(format!("unknown status {}", m.status)));
            }
        };
        let purchase = Purchase {
            id: m.id,
            item,
            kind,
            buyer: address(&m.buyer, "buyer")?,
            buyer_org: m.buyer_org.clone(),
            provider: address(&m.provider, "provider")?,
            provider_org: m.provider_org.clone(),
            opened_height: m.opened_height,
            key_deadline: m.key_deadline_height,
            due_height: m.due_height,
            state,
            royalties,
        };
        // What is left unread (a delivery on a purchase awaiting its key, money on a validation
        // request) would be lost on the next write: the record is exactly what encoding gives
        // back, or it is corrupt.
        if pb::Purchase::from(&purchase) != m {
            return Err(corrupt(format!(
                "fields that do not belong to a {} purchase",
                m.status().as_str_name()
            )));
        }
        Ok(purchase)
    }
}

impl From<&Purchase> for pb::Purchase {
    fn from(p: &Purchase) -> pb::Purchase {
        let (price, fee) = match p.kind {
            PurchaseKind::Sale { price, fee } => (price, fee),
            PurchaseKind::Validation
            | PurchaseKind::Training { .. }
            | PurchaseKind::Evaluation { .. } => (Amount::ZERO, Amount::ZERO),
        };
        let delivery = p.state.delivery();
        pb::Purchase {
            id: p.id,
            dataset_id: p.item.dataset_id(),
            kind: p.kind.wire() as i32,
            buyer: p.buyer.0.to_vec(),
            buyer_org: p.buyer_org.clone(),
            provider: p.provider.0.to_vec(),
            provider_org: p.provider_org.clone(),
            price: price.to_string(),
            fee: fee.to_string(),
            status: p.state.status() as i32,
            opened_height: p.opened_height,
            key_deadline_height: p.key_deadline,
            due_height: p.due_height,
            delivered_height: delivery.map_or(0, |d| d.height),
            closed_height: p.state.closed_height().unwrap_or(0),
            wrapped_key: delivery
                .map(|d| d.wrapped_key.to_bytes())
                .unwrap_or_default(),
            delivered_by: delivery
                .map(|d| d.delivered_by.0.to_vec())
                .unwrap_or_default(),
            key_recipient: delivery
                .and_then(|d| d.key_recipient)
                .map(|a| a.0.to_vec())
                .unwrap_or_default(),
            training_job: match p.kind {
                PurchaseKind::Training { job } => job,
                _ => 0,
            },
            evaluation: match p.kind {
                PurchaseKind::Evaluation { evaluation } => evaluation,
                _ => 0,
            },
            model_listing: p.item.model_listing(),
            royalties: p.royalties.iter().map(pb::Royalty::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUYER: Address = Address([1; 32]);
    const PROVIDER: Address = Address([2; 32]);
    const SUCCESSOR: Address = Address([3; 32]);
    const DELIVERER: Address = Address([4; 32]);
    const STRANGER: Address = Address([5; 32]);
    const SALE: PurchaseKind = PurchaseKind::Sale {
        price: Amount(1000),
        fee: Amount(20),
    };

    /// A wrapping whose ephemeral point is P-256's generator, so it parses.
    fn wrapped_key() -> WrappedKey {
        let generator = hex::decode(concat!(
            "04",
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        ))
        .unwrap();
        WrappedKey {
            ephemeral: generator.try_into().unwrap(),
            sealed: [7; 48],
        }
    }

    /// Opened at 10 with 10 blocks to deliver and 10 to confirm: key by 20, due at 30.
    fn awaiting() -> Purchase {
        Purchase {
            id: 7,
            item: Item::Dataset(3),
            kind: SALE,
            buyer: BUYER,
            buyer_org: "org1".into(),
            provider: PROVIDER,
            provider_org: "org0".into(),
            opened_height: 10,
            key_deadline: 20,
            due_height: 30,
            state: PurchaseState::AwaitingKey,
            royalties: Vec::new(),
        }
    }

    fn delivery() -> Delivery {
        Delivery {
            wrapped_key: wrapped_key(),
            delivered_by: DELIVERER,
            key_recipient: Some(BUYER),
            height: 15,
        }
    }

    /// Key delivered at 15: due at 25.
    fn delivered() -> Purchase {
        Purchase {
            due_height: 25,
            state: PurchaseState::KeyDelivered(delivery()),
            ..awaiting()
        }
    }

    fn confirmed() -> Purchase {
        in_state(
            delivered(),
            PurchaseState::Confirmed {
                delivery: delivery(),
                closed_height: 18,
            },
        )
    }

    fn released() -> Purchase {
        in_state(
            delivered(),
            PurchaseState::Released {
                delivery: delivery(),
                closed_height: 25,
            },
        )
    }

    fn refunded() -> Purchase {
        in_state(awaiting(), PurchaseState::Refunded { closed_height: 30 })
    }

    fn wrong_key_refunded() -> Purchase {
        in_state(
            delivered(),
            PurchaseState::WrongKeyRefunded {
                delivery: delivery(),
                closed_height: 18,
            },
        )
    }

    fn closed() -> [Purchase; 4] {
        [confirmed(), released(), refunded(), wrong_key_refunded()]
    }

    fn in_state(p: Purchase, state: PurchaseState) -> Purchase {
        Purchase { state, ..p }
    }

    fn validation(p: Purchase) -> Purchase {
        Purchase {
            kind: PurchaseKind::Validation,
            ..p
        }
    }

    fn deliver(height: u64) -> Input {
        Input::Deliver {
            wrapped_key: wrapped_key(),
            recipient: BUYER,
            delivered_by: DELIVERER,
            height,
            confirm_blocks: 10,
        }
    }

    fn refund(height: u64) -> Input {
        Input::Refund {
            height,
            provider_org_active: true,
        }
    }

    fn dispute(key_matches: bool) -> Input {
        Input::Dispute {
            height: 18,
            key_matches,
        }
    }

    /// `from` moved to SUCCESSOR.
    fn move_buyer(from: Address) -> Input {
        Input::MoveBuyer {
            from,
            to: SUCCESSOR,
        }
    }

    /// `from` moved to SUCCESSOR.
    fn move_provider(from: Address) -> Input {
        Input::MoveProvider {
            from,
            to: SUCCESSOR,
        }
    }

    fn to(purchase: Purchase, effects: Vec<Effect>) -> Result<Transition, EscrowError> {
        Ok(Transition { purchase, effects })
    }

    fn wrong(p: &Purchase, action: &'static str) -> Result<Transition, EscrowError> {
        Err(EscrowError::WrongStatus {
            purchase: 7,
            status: status_name(p.state.status() as i32),
            action,
        })
    }

    /// A sale paid out of a schedule entry at `due`: the provider's share, the fee.
    fn paid(due: u64) -> Vec<Effect> {
        vec![
            Effect::Pay {
                to: PROVIDER,
                amount: Amount(980),
            },
            Effect::Fee { amount: Amount(20) },
            Effect::CountPaid {
                revenue: Amount(980),
            },
            Effect::Unschedule { height: due },
            Effect::Emit(Notice::Closed),
        ]
    }

    /// A sale refunded out of a schedule entry at `due`: the price back, access gone.
    fn refunded_sale(due: u64) -> Vec<Effect> {
        vec![
            Effect::Pay {
                to: BUYER,
                amount: Amount(1000),
            },
            Effect::CountRefund,
            Effect::DropLive { buyer: BUYER },
            Effect::Unschedule { height: due },
            Effect::Emit(Notice::Closed),
        ]
    }

    struct TestStep {
        desc: &'static str,
        start: Purchase,
        input: Input,
        expected: Result<Transition, EscrowError>,
    }

    fn step(
        desc: &'static str,
        start: Purchase,
        input: Input,
        expected: Result<Transition, EscrowError>,
    ) -> TestStep {
        TestStep {
            desc,
            start,
            input,
            expected,
        }
    }

    fn steps() -> Vec<TestStep> {
        let mut steps = vec![
            // Deliver
            step(
                "the provider's org delivers within the window: the confirm window starts",
                awaiting(),
                deliver(15),
                to(
                    delivered(),
                    vec![
                        Effect::Unschedule { height: 30 },
                        Effect::Schedule { height: 25 },
                        Effect::Emit(Notice::KeyDelivered),
                    ],
                ),
            ),
            step(
                "a key on the deadline is in time",
                awaiting(),
                deliver(20),
                to(
                    Purchase {
                        due_height: 30,
                        state: PurchaseState::KeyDelivered(Delivery {
                            height: 20,
                            ..delivery()
                        }),
                        ..awaiting()
                    },
                    vec![
                        Effect::Unschedule { height: 30 },
                        Effect::Schedule { height: 30 },
                        Effect::Emit(Notice::KeyDelivered),
                    ],
                ),
            ),
            step(
                "a key after the deadline is refused",
                awaiting(),
                deliver(21),
                Err(EscrowError::DeliveryWindowClosed {
                    purchase: 7,
                    deadline: 20,
                }),
            ),
            step(
                "a key wrapped to someone other than the buyer is refused",
                awaiting(),
                Input::Deliver {
                    wrapped_key: wrapped_key(),
                    recipient: SUCCESSOR,
                    delivered_by: DELIVERER,
                    height: 15,
                    confirm_blocks: 10,
                },
                Err(EscrowError::RecipientNotBuyer {
                    purchase: 7,
                    buyer: BUYER.to_hex(),
                }),
            ),
            step(
                "a second key is refused",
                delivered(),
                deliver(16),
                wrong(&delivered(), "deliver a key for"),
            ),
            // Confirm
            step(
                "the buyer's confirmation pays the provider and the reward pool",
                delivered(),
                Input::Confirm { height: 18 },
                to(confirmed(), paid(25)),
            ),
            step(
                "a confirmation before any key is refused",
                awaiting(),
                Input::Confirm { height: 18 },
                wrong(&awaiting(), "confirm"),
            ),
            step(
                "a confirmed validation request frees its org's slot and moves no money",
                validation(delivered()),
                Input::Confirm { height: 18 },
                to(
                    validation(confirmed()),
                    vec![
                        Effect::FreeValidationSlot { org: "org1".into() },
                        Effect::Unschedule { height: 25 },
                        Effect::Emit(Notice::Closed),
                    ],
                ),
            ),
            step(
                "a free sale is counted as paid with nothing to pay",
                Purchase {
                    kind: PurchaseKind::Sale {
                        price: Amount::ZERO,
                        fee: Amount::ZERO,
                    },
                    ..delivered()
                },
                Input::Confirm { height: 18 },
                to(
                    Purchase {
                        kind: PurchaseKind::Sale {
                            price: Amount::ZERO,
                            fee: Amount::ZERO,
                        },
                        ..confirmed()
                    },
                    vec![
                        Effect::CountPaid {
                            revenue: Amount::ZERO,
                        },
                        Effect::Unschedule { height: 25 },
                        Effect::Emit(Notice::Closed),
                    ],
                ),
            ),
            // Refund
            step(
                "the buyer is refunded once the delivery window passed without a key",
                awaiting(),
                refund(21),
                to(
                    in_state(awaiting(), PurchaseState::Refunded { closed_height: 21 }),
                    refunded_sale(30),
                ),
            ),
            step(
                "a refund on the deadline is too early",
                awaiting(),
                refund(20),
                Err(EscrowError::RefundTooEarly {
                    purchase: 7,
                    deadline: 20,
                }),
            ),
            step(
                "a removed provider org need not be waited for",
                awaiting(),
                Input::Refund {
                    height: 12,
                    provider_org_active: false,
                },
                to(
                    in_state(awaiting(), PurchaseState::Refunded { closed_height: 12 }),
                    refunded_sale(30),
                ),
            ),
            step(
                "a refund after the key came is refused",
                delivered(),
                refund(21),
                wrong(&delivered(), "refund"),
            ),
            step(
                "a refunded validation request frees its slot and moves no money",
                validation(awaiting()),
                refund(21),
                to(
                    validation(in_state(
                        awaiting(),
                        PurchaseState::Refunded { closed_height: 21 },
                    )),
                    vec![
                        Effect::DropLive { buyer: BUYER },
                        Effect::FreeValidationSlot { org: "org1".into() },
                        Effect::Unschedule { height: 30 },
                        Effect::Emit(Notice::Closed),
                    ],
                ),
            ),
            // Dispute
            step(
                "a key proven wrong refunds the buyer",
                delivered(),
                dispute(false),
                to(
                    wrong_key_refunded(),
                    [vec![Effect::Emit(Notice::DisputeUpheld)], refunded_sale(25)].concat(),
                ),
            ),
            step(
                "a dispute that proves the key right is refused",
                delivered(),
                dispute(true),
                Err(EscrowError::KeyMatches(7)),
            ),
            step(
                "a dispute before any key is refused",
                awaiting(),
                dispute(false),
                wrong(&awaiting(), "dispute"),
            ),
            // Due
            step(
                "no key by the due height refunds the buyer",
                awaiting(),
                Input::Due { height: 30 },
                to(refunded(), refunded_sale(30)),
            ),
            step(
                "a silent buyer's purchase is released to the provider when due",
                delivered(),
                Input::Due { height: 25 },
                to(released(), paid(25)),
            ),
            step(
                "a released validation request frees its slot",
                validation(delivered()),
                Input::Due { height: 25 },
                to(
                    validation(released()),
                    vec![
                        Effect::FreeValidationSlot { org: "org1".into() },
                        Effect::Unschedule { height: 25 },
                        Effect::Emit(Notice::Closed),
                    ],
                ),
            ),
            // MoveBuyer
            step(
                "an open purchase moves to the buyer's successor",
                awaiting(),
                move_buyer(BUYER),
                to(
                    Purchase {
                        buyer: SUCCESSOR,
                        ..awaiting()
                    },
                    vec![],
                ),
            ),
            step(
                "a delivered key stays wrapped to the old buyer",
                delivered(),
                move_buyer(BUYER),
                to(
                    Purchase {
                        buyer: SUCCESSOR,
                        ..delivered()
                    },
                    vec![],
                ),
            ),
            step(
                "a delivery that named no recipient records the old buyer as it",
                in_state(
                    delivered(),
                    PurchaseState::KeyDelivered(Delivery {
                        key_recipient: None,
                        ..delivery()
                    }),
                ),
                move_buyer(BUYER),
                to(
                    Purchase {
                        buyer: SUCCESSOR,
                        ..delivered()
                    },
                    vec![],
                ),
            ),
            step(
                "a purchase that already moved stays with its buyer",
                awaiting(),
                move_buyer(STRANGER),
                to(awaiting(), vec![]),
            ),
            // MoveProvider
            step(
                "an open purchase awaiting its key is paid to the provider's successor",
                awaiting(),
                move_provider(PROVIDER),
                to(
                    Purchase {
                        provider: SUCCESSOR,
                        ..awaiting()
                    },
                    vec![],
                ),
            ),
            step(
                "a delivered purchase is paid to the provider's successor",
                delivered(),
                move_provider(PROVIDER),
                to(
                    Purchase {
                        provider: SUCCESSOR,
                        ..delivered()
                    },
                    vec![],
                ),
            ),
            step(
                "another provider's purchase is left alone",
                delivered(),
                move_provider(STRANGER),
                to(delivered(), vec![]),
            ),
        ];
        // A closed purchase refuses every action, ignores moves, and only loses a leftover
        // schedule entry.
        for p in closed() {
            steps.extend([
                step(
                    "a closed purchase takes no key",
                    p.clone(),
                    deliver(16),
                    wrong(&p, "deliver a key for"),
                ),
                step(
                    "a closed purchase cannot be confirmed",
                    p.clone(),
                    Input::Confirm { height: 40 },
                    wrong(&p, "confirm"),
                ),
                step(
                    "a closed purchase cannot be refunded",
                    p.clone(),
                    refund(40),
                    wrong(&p, "refund"),
                ),
                step(
                    "a closed purchase cannot be disputed",
                    p.clone(),
                    dispute(false),
                    wrong(&p, "dispute"),
                ),
                step(
                    "a leftover schedule entry of a closed purchase is only removed",
                    p.clone(),
                    Input::Due { height: 40 },
                    to(p.clone(), vec![Effect::Unschedule { height: 40 }]),
                ),
                step(
                    "a closed purchase keeps the buyer it settled with",
                    p.clone(),
                    move_buyer(BUYER),
                    to(p.clone(), vec![]),
                ),
                step(
                    "a closed purchase keeps the provider it settled with",
                    p.clone(),
                    move_provider(PROVIDER),
                    to(p.clone(), vec![]),
                ),
            ]);
        }
        steps
    }

    #[test]
    fn every_step_of_the_lifecycle_table_gives_its_transition_or_error() {
        for TestStep {
            desc,
            start,
            input,
            expected,
        } in steps()
        {
            let status = start.state.status().as_str_name();
            assert_eq!(start.step(input), expected, "{desc} ({status})");
        }
    }

    #[test]
    fn the_lifecycle_table_covers_every_status_and_input() {
        let name = |input: &Input| match input {
            Input::Deliver { .. } => "deliver",
            Input::Confirm { .. } => "confirm",
            Input::Refund { .. } => "refund",
            Input::Dispute { .. } => "dispute",
            Input::Due { .. } => "due",
            Input::MoveBuyer { .. } => "move buyer",
            Input::MoveProvider { .. } => "move provider",
        };
        let covered: std::collections::BTreeSet<_> = steps()
            .iter()
            .map(|s| (s.start.state.status().as_str_name(), name(&s.input)))
            .collect();
        assert_eq!(covered.len(), 6 * 7, "{covered:#?}");
    }

    #[test]
    fn opening_a_purchase_awaits_its_key_and_schedules_its_refund() {
        let opening = |kind| Opening {
            id: 7,
            item: Item::Dataset(3),
            kind,
            buyer: BUYER,
            buyer_org: "org1".into(),
            provider: PROVIDER,
            provider_org: "org0".into(),
            royalties: Vec::new(),
        };
        let free = PurchaseKind::Sale {
            price: Amount::ZERO,
            fee: Amount::ZERO,
        };
        let opened = |effects| Transition {
            purchase: awaiting(),
            effects,
        };
        let cases = [
            (
                "a sale escrows the price and counts the sale",
                SALE,
                opened(vec![
                    Effect::MarkLive { buyer: BUYER },
                    Effect::Schedule { height: 30 },
                    Effect::Emit(Notice::Opened),
                    Effect::Escrow {
                        from: BUYER,
                        amount: Amount(1000),
                    },
                    Effect::CountSale,
                ]),
            ),
            (
                "a free sale escrows nothing",
                free,
                Transition {
                    purchase: Purchase {
                        kind: free,
                        ..awaiting()
                    },
                    effects: vec![
                        Effect::MarkLive { buyer: BUYER },
                        Effect::Schedule { height: 30 },
                        Effect::Emit(Notice::Opened),
                        Effect::CountSale,
                    ],
                },
            ),
            (
                "a validation request takes a slot of its org and moves no money",
                PurchaseKind::Validation,
                Transition {
                    purchase: validation(awaiting()),
                    effects: vec![
                        Effect::TakeValidationSlot { org: "org1".into() },
                        Effect::MarkLive { buyer: BUYER },
                        Effect::Schedule { height: 30 },
                        Effect::Emit(Notice::Opened),
                    ],
                },
            ),
        ];
        for (desc, kind, expected) in cases {
            assert_eq!(opening(kind).open(10, 10, 10), expected, "{desc}");
        }
    }

    #[test]
    fn every_state_decodes_from_its_stored_form_unchanged() {
        let legacy = in_state(
            delivered(),
            PurchaseState::KeyDelivered(Delivery {
                key_recipient: None,
                ..delivery()
            }),
        );
        let all = [awaiting(), delivered(), legacy, validation(awaiting())];
        for p in all.into_iter().chain(closed()) {
            let stored = pb::Purchase::from(&p);
            assert_eq!(Purchase::try_from(stored), Ok(p.clone()), "{:?}", p.state);
        }
    }

    #[test]
    fn the_stored_form_is_the_record_handlers_wrote_before_the_lifecycle_type() {
        let opened = pb::Purchase {
            id: 7,
            dataset_id: 3,
            kind: pb::PurchaseKind::Sale as i32,
            buyer: BUYER.0.to_vec(),
            buyer_org: "org1".into(),
            provider: PROVIDER.0.to_vec(),
            provider_org: "org0".into(),
            price: "1000".into(),
            fee: "20".into(),
            status: pb::PurchaseStatus::AwaitingKey as i32,
            opened_height: 10,
            key_deadline_height: 20,
            due_height: 30,
            ..Default::default()
        };
        assert_eq!(pb::Purchase::from(&awaiting()), opened);
        let delivered_record = pb::Purchase {
            status: pb::PurchaseStatus::KeyDelivered as i32,
            wrapped_key: wrapped_key().to_bytes(),
            delivered_by: DELIVERER.0.to_vec(),
            key_recipient: BUYER.0.to_vec(),
            delivered_height: 15,
            due_height: 25,
            ..opened.clone()
        };
        assert_eq!(pb::Purchase::from(&delivered()), delivered_record);
        let confirmed_record = pb::Purchase {
            status: pb::PurchaseStatus::Confirmed as i32,
            closed_height: 18,
            ..delivered_record
        };
        assert_eq!(pb::Purchase::from(&confirmed()), confirmed_record);
        let validation_record = pb::Purchase {
            kind: pb::PurchaseKind::Validation as i32,
            price: "0".into(),
            fee: "0".into(),
            ..opened
        };
        assert_eq!(
            pb::Purchase::from(&validation(awaiting())),
            validation_record
        );
    }

    #[test]
    fn records_that_do_not_fit_their_status_are_corrupt() {
        let stored = || pb::Purchase::from(&awaiting());
        let delivered_record = || pb::Purchase::from(&delivered());
        let cases = [
            (
                "no status",
                pb::Purchase {
                    status: 0,
                    ..stored()
                },
            ),
            (
                "an unknown status",
                pb::Purchase {
                    status: 99,
                    ..stored()
                },
            ),
            (
                "no kind",
                pb::Purchase {
                    kind: 0,
                    ..stored()
                },
            ),
            (
                "a fee above the price",
                pb::Purchase {
                    fee: "1001".into(),
                    ..stored()
                },
            ),
            (
                "a price that is not a canonical decimal",
                pb::Purchase {
                    price: "01000".into(),
                    ..stored()
                },
            ),
            (
                "a short buyer address",
                pb::Purchase {
                    buyer: vec![1; 31],
                    ..stored()
                },
            ),
            (
                "a key on a purchase awaiting it",
                pb::Purchase {
                    status: pb::PurchaseStatus::AwaitingKey as i32,
                    ..delivered_record()
                },
            ),
            (
                "a closed height on an open purchase",
                pb::Purchase {
                    closed_height: 18,
                    ..stored()
                },
            ),
            (
                "money on a validation request",
                pb::Purchase {
                    kind: pb::PurchaseKind::Validation as i32,
                    ..stored()
                },
            ),
            (
                "a delivered purchase without a valid wrapping",
                pb::Purchase {
                    wrapped_key: vec![1; 10],
                    ..delivered_record()
                },
            ),
            (
                "a delivered purchase without its deliverer",
                pb::Purchase {
                    delivered_by: vec![],
                    ..delivered_record()
                },
            ),
        ];
        for (desc, record) in cases {
            match Purchase::try_from(record) {
                Err(StateError::Corrupt { key, .. }) => {
                    assert_eq!(key, state_key::purchase(7), "{desc}")
                }
                other => panic!("{desc}: {other:?}"),
            }
        }
    }

    const DATA_A: Address = Address([6; 32]);
    const DATA_B: Address = Address([8; 32]);

    /// `p` as a sale of model listing 9 whose royalties are 100 to dataset 1's provider and 50
    /// to dataset 2's: the owner gets 1000 - 20 - 150.
    fn model_sale(p: Purchase) -> Purchase {
        Purchase {
            item: Item::Model(9),
            royalties: vec![
                Royalty {
                    dataset: 1,
                    to: DATA_A,
                    provider_org: "lab-a".into(),
                    amount: Amount(100),
                },
                Royalty {
                    dataset: 2,
                    to: DATA_B,
                    provider_org: "lab-b".into(),
                    amount: Amount(50),
                },
            ],
            ..p
        }
    }

    /// A model sale paid out of a schedule entry at `due`: owner, each royalty, the fee.
    fn model_paid(due: u64) -> Vec<Effect> {
        vec![
            Effect::Pay {
                to: PROVIDER,
                amount: Amount(830),
            },
            Effect::Pay {
                to: DATA_A,
                amount: Amount(100),
            },
            Effect::CountRoyalty {
                dataset: 1,
                amount: Amount(100),
            },
            Effect::Pay {
                to: DATA_B,
                amount: Amount(50),
            },
            Effect::CountRoyalty {
                dataset: 2,
                amount: Amount(50),
            },
            Effect::Fee { amount: Amount(20) },
            Effect::CountPaid {
                revenue: Amount(830),
            },
            Effect::Unschedule { height: due },
            Effect::Emit(Notice::Closed),
        ]
    }

    #[test]
    fn a_model_sale_pays_its_royalties_only_when_the_owner_is_paid() {
        let cases = [
            (
                "confirmed: owner, royalties and fee, out of the one price",
                model_sale(delivered()),
                Input::Confirm { height: 18 },
                to(model_sale(confirmed()), model_paid(25)),
            ),
            (
                "released in silence: the same",
                model_sale(delivered()),
                Input::Due { height: 25 },
                to(model_sale(released()), model_paid(25)),
            ),
            (
                "no key in time: the whole price back, no royalty",
                model_sale(awaiting()),
                Input::Due { height: 30 },
                to(model_sale(refunded()), refunded_sale(30)),
            ),
            (
                "refunded by the buyer: the whole price back, no royalty",
                model_sale(awaiting()),
                refund(21),
                to(
                    model_sale(in_state(
                        awaiting(),
                        PurchaseState::Refunded { closed_height: 21 },
                    )),
                    refunded_sale(30),
                ),
            ),
            (
                "a key proven wrong: the whole price back, no royalty",
                model_sale(delivered()),
                dispute(false),
                to(
                    model_sale(wrong_key_refunded()),
                    [vec![Effect::Emit(Notice::DisputeUpheld)], refunded_sale(25)].concat(),
                ),
            ),
        ];
        for (desc, start, input, expected) in cases {
            assert_eq!(start.step(input), expected, "{desc}");
        }
    }

    #[test]
    fn a_zero_royalty_pays_and_counts_nothing() {
        let mut p = model_sale(delivered());
        p.royalties[1].amount = Amount::ZERO;
        let effects = p.step(Input::Confirm { height: 18 }).map(|t| t.effects);
        let pays_b = effects.iter().flatten().any(|e| {
            matches!(e, Effect::Pay { to, .. } if *to == DATA_B)
                || matches!(e, Effect::CountRoyalty { dataset: 2, .. })
        });
        assert!(!pays_b, "{effects:?}");
        let owner = effects.iter().flatten().find_map(|e| match e {
            Effect::Pay { to, amount } if *to == PROVIDER => Some(*amount),
            _ => None,
        });
        assert_eq!(
            owner,
            Some(Amount(880)),
            "the owner keeps what is not paid out"
        );
    }

    #[test]
    fn a_moved_data_provider_takes_its_open_royalties_along() {
        let moved = model_sale(delivered()).step(Input::MoveProvider {
            from: DATA_B,
            to: SUCCESSOR,
        });
        let mut expected = model_sale(delivered());
        expected.royalties[1].to = SUCCESSOR;
        assert_eq!(moved, to(expected, vec![]));
        let closed = model_sale(confirmed());
        assert_eq!(
            closed.step(Input::MoveProvider {
                from: DATA_B,
                to: SUCCESSOR,
            }),
            to(closed.clone(), vec![]),
            "a paid sale keeps whom it paid"
        );
    }

    #[test]
    fn opening_a_model_sale_escrows_its_price_and_keeps_its_royalties() {
        let opening = Opening {
            id: 7,
            item: Item::Model(9),
            kind: SALE,
            buyer: BUYER,
            buyer_org: "org1".into(),
            provider: PROVIDER,
            provider_org: "org0".into(),
            royalties: model_sale(awaiting()).royalties,
        };
        assert_eq!(
            opening.open(10, 10, 10),
            Transition {
                purchase: model_sale(awaiting()),
                effects: vec![
                    Effect::MarkLive { buyer: BUYER },
                    Effect::Schedule { height: 30 },
                    Effect::Emit(Notice::Opened),
                    Effect::Escrow {
                        from: BUYER,
                        amount: Amount(1000),
                    },
                    Effect::CountSale,
                ],
            }
        );
    }

    #[test]
    fn model_sales_decode_from_their_stored_form_unchanged() {
        for p in [awaiting(), delivered(), confirmed(), released(), refunded()].map(model_sale) {
            let stored = pb::Purchase::from(&p);
            assert_eq!(stored.dataset_id, 0);
            assert_eq!(stored.model_listing, 9);
            assert_eq!(stored.royalties.len(), 2);
            assert_eq!(Purchase::try_from(stored), Ok(p.clone()), "{:?}", p.state);
        }
    }

    #[test]
    fn a_validators_key_request_of_a_model_listing_moves_no_money_and_decodes_unchanged() {
        let opening = Opening {
            id: 7,
            item: Item::Model(9),
            kind: PurchaseKind::Validation,
            buyer: BUYER,
            buyer_org: "org1".into(),
            provider: PROVIDER,
            provider_org: "org0".into(),
            royalties: Vec::new(),
        };
        let opened = opening.open(10, 10, 10);
        assert_eq!(
            opened.effects,
            vec![
                Effect::TakeValidationSlot { org: "org1".into() },
                Effect::MarkLive { buyer: BUYER },
                Effect::Schedule { height: 30 },
                Effect::Emit(Notice::Opened),
            ]
        );
        let stored = pb::Purchase::from(&opened.purchase);
        assert_eq!((stored.dataset_id, stored.model_listing), (0, 9));
        assert_eq!(Purchase::try_from(stored), Ok(opened.purchase.clone()));
        // Confirmed: nobody is paid, the slot is freed, the mark (the key's record) stays.
        let delivered = opened
            .purchase
            .step(Input::Deliver {
                wrapped_key: wrapped_key(),
                recipient: BUYER,
                delivered_by: PROVIDER,
                height: 12,
                confirm_blocks: 10,
            })
            .unwrap()
            .purchase;
        let closed = delivered.step(Input::Confirm { height: 13 }).unwrap();
        assert!(
            !closed
                .effects
                .iter()
                .any(|e| matches!(e, Effect::Pay { .. } | Effect::DropLive { .. })),
            "{:?}",
            closed.effects
        );
        assert!(
            closed
                .effects
                .contains(&Effect::FreeValidationSlot { org: "org1".into() })
        );
        let stored = pb::Purchase::from(&closed.purchase);
        assert_eq!(Purchase::try_from(stored), Ok(closed.purchase));
    }

    #[test]
    fn model_sale_records_that_do_not_add_up_are_corrupt() {
        let stored = || pb::Purchase::from(&model_sale(awaiting()));
        let cases = [
            ("royalties above what the fee leaves", {
                let mut m = stored();
                m.royalties[0].amount = "961".into();
                m
            }),
            (
                "a dataset and a model listing at once",
                pb::Purchase {
                    dataset_id: 3,
                    ..stored()
                },
            ),
            (
                "royalties on a dataset purchase",
                pb::Purchase {
                    dataset_id: 3,
                    model_listing: 0,
                    ..stored()
                },
            ),
            (
                "a model's training key request",
                pb::Purchase {
                    kind: pb::PurchaseKind::Training as i32,
                    training_job: 4,
                    price: "0".into(),
                    fee: "0".into(),
                    royalties: vec![],
                    ..stored()
                },
            ),
            (
                "royalties on a model's validation request",
                pb::Purchase {
                    kind: pb::PurchaseKind::Validation as i32,
                    price: "0".into(),
                    fee: "0".into(),
                    ..stored()
                },
            ),
            ("a royalty to a short address", {
                let mut m = stored();
                m.royalties[1].to = vec![1; 31];
                m
            }),
            ("a royalty that is not a canonical decimal", {
                let mut m = stored();
                m.royalties[1].amount = "050".into();
                m
            }),
        ];
        for (desc, record) in cases {
            match Purchase::try_from(record) {
                Err(StateError::Corrupt { key, .. }) => {
                    assert_eq!(key, state_key::purchase(7), "{desc}")
                }
                other => panic!("{desc}: {other:?}"),
            }
        }
        let mut all_of_it = stored();
        all_of_it.royalties[0].amount = "930".into();
        assert!(
            Purchase::try_from(all_of_it).is_ok(),
            "fee and royalties may take the whole price"
        );
    }
}
