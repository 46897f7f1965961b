//! Checkpoint store over object_store: envelopes, manifests, conditional commit, fencing, retention.
