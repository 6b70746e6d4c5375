//! The metric families this crate records: each name once, with the HELP text that
//! `/metrics` shows beside it.

oni_proto::metric_names! {
    /// Captions received, by outcome (queued, duplicate, rejected).
    counter CAPTIONS = "oni_annotator_captions_total";
    /// Questions dropped, by reason (backlog_full, waiting_full, pair_backlog_full, shutdown).
    counter DROPPED = "oni_annotator_dropped_total";
    /// Entries forgotten at a map's cap, by map (answers_by_question: that question is asked again).
    counter EVICTIONS = "oni_annotator_evictions_total";
    /// Questions put back to be asked again after a failed request.
    counter REQUEUED = "oni_annotator_requeued_total";
    /// Captions already in the label bank when they arrived.
    counter BANK_HITS = "oni_label_bank_hits_total";
    /// Failed writes to the label bank (answers kept and written again).
    counter BANK_WRITE_FAILURES = "oni_label_bank_write_failures_total";
    /// Labels stored, by label.
    counter LABELS = "oni_labels_total";
    /// Ranking answers stored, by preference.
    counter PAIRS = "oni_pairs_total";
    /// Failed LLM requests, by kind of error.
    counter LLM_ERRORS = "oni_llm_errors_total";
    /// LLM requests, by outcome.
    counter LLM_REQUESTS = "oni_llm_requests_total";
    /// LLM requests retried, by kind of error.
    counter LLM_RETRIES = "oni_llm_retries_total";
    /// Tokens the LLM server reported, by kind (prompt, completion).
    counter LLM_TOKENS = "oni_llm_tokens_total";
    /// LLM answers that could not be read as a label.
    counter LLM_UNPARSED = "oni_llm_unparsed_answers_total";
    /// Prompts given up on after the server may have started on them.
    counter LLM_WASTED_PROMPTS = "oni_llm_wasted_prompts_total";
    /// Distillation steps of the reward model.
    counter REWARD_MODEL_TRAIN_STEPS = "oni_reward_model_train_steps_total";
    /// Labels stored per second, recent rate.
    gauge LABELS_PER_SECOND = "oni_annotator_labels_per_second";
    /// New unique captions per second, recent rate.
    gauge NEW_CAPTIONS_PER_SECOND = "oni_annotator_new_captions_per_second";
    /// 1 while captions arrive faster than labels and the backlog grows.
    gauge STARVING = "oni_annotator_starving";
    /// Captions waiting for the LLM.
    gauge LLM_BACKLOG = "oni_llm_backlog";
    /// Caption pairs waiting for the LLM.
    gauge LLM_PAIR_BACKLOG = "oni_llm_pair_backlog";
    /// 1 while the circuit breaker holds requests to the LLM back.
    gauge LLM_CIRCUIT_OPEN = "oni_llm_circuit_open";
    /// Concurrent LLM requests currently allowed (adaptive).
    gauge LLM_CONCURRENCY_LIMIT = "oni_llm_concurrency_limit";
    /// LLM requests in flight.
    gauge LLM_IN_FLIGHT = "oni_llm_in_flight_requests";
    /// Parallel slots the LLM server reports.
    gauge LLM_SERVER_SLOTS = "oni_llm_server_slots";
    /// Labels evicted from the distillation dataset at its cap.
    gauge DATASET_EVICTED = "oni_reward_model_dataset_evicted";
    /// Labels in the distillation dataset.
    gauge DATASET_SIZE = "oni_reward_model_dataset_size";
    /// Accuracy of the reward model on held-out labels.
    gauge HELDOUT_ACCURACY = "oni_reward_model_heldout_accuracy";
    /// Share of labelled captions the reward model pays exactly when helpful, by reference (heldout, bank, gold).
    gauge ACCURACY = "oni_reward_model_accuracy";
    /// Distillation loss, last round.
    gauge REWARD_MODEL_LOSS = "oni_reward_model_loss";
    /// Seconds per LLM request.
    histogram LLM_REQUEST_SECONDS = "oni_llm_request_seconds";
}
