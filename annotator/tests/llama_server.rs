//! The LLM client against a real llama.cpp `llama-server` with the SmolLM2-135M-Instruct
//! GGUF (both provided by scripts/llm-server.sh, which scripts/test.sh runs first).

use oni_annotator::llm::{Api, Constrain};
use oni_annotator::{Label, LlmClient, LlmConfig, PromptConfig};
use oni_test_support::{free_port, llama_server};

#[tokio::test]
async fn labels_captions_with_a_real_llama_server_under_both_apis() {
    let port = free_port();
    let _server = llama_server(port);
    let captions: Vec<String> =
        ["You see here a brass key.", "This door is locked.", "You hit the newt.", "There is a staircase down here."]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let cases = [
        (Api::Completions, Constrain::Grammar),
        (Api::Chat, Constrain::Grammar),
        (Api::Completions, Constrain::JsonSchema),
    ];
    for (api, constrain) in cases {
        let cfg = LlmConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            api,
            constrain,
            batch: 4,
            timeout_ms: 60_000,
            ..Default::default()
        };
        let client = LlmClient::new(cfg).unwrap();
        let out = client.classify(&PromptConfig::default(), &captions).await;
        assert_eq!(out.len(), 4);
        for a in &out {
            let a = a.as_ref().unwrap_or_else(|e| panic!("{api:?}/{constrain:?}: {e}"));
            // constrained decoding leaves the server no way to answer anything but the JSON
            assert!(
                matches!(a.label, Label::Helpful | Label::Unhelpful),
                "{api:?}/{constrain:?}: unparsed {:?}",
                a.raw
            );
            assert!(a.raw.contains("\"helpful\""), "{api:?}/{constrain:?}: {:?}", a.raw);
        }
    }
    // the server's 4 parallel slots cap a client configured for 16 requests at once
    let cfg = LlmConfig { base_url: format!("http://127.0.0.1:{port}"), concurrency: 16, ..Default::default() };
    let client = LlmClient::new(cfg).unwrap();
    assert_eq!(client.concurrency_limit(), 16);
    assert_eq!(client.fit_to_server().await, Some(4));
    assert_eq!(client.concurrency_limit(), 4);
    // a server that says nothing about its slots leaves the limit alone
    let gone = free_port();
    let cfg = LlmConfig { base_url: format!("http://127.0.0.1:{gone}"), concurrency: 16, ..Default::default() };
    let client = LlmClient::new(cfg).unwrap();
    assert_eq!(client.fit_to_server().await, None);
    assert_eq!(client.concurrency_limit(), 16);
}
