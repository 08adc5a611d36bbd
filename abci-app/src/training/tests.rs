//! Tests of the training module (filled below).
