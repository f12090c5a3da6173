use super::*;

async fn lines_of(input: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = LineReader::new(BufReader::with_capacity(4, input));
    let mut out = Vec::new();
    while let Some(line) = reader.next_line().await {
        out.push(line);
    }
    out
}

#[tokio::test]
async fn lines_split_across_reads_and_the_last_may_lack_a_newline() {
    assert_eq!(
        lines_of(b"first line\n\nsecond\nlast").await,
        vec![
            b"first line".to_vec(),
            vec![],
            b"second".to_vec(),
            b"last".to_vec()
        ]
    );
    assert!(lines_of(b"").await.is_empty());
}

#[tokio::test]
async fn stderr_keeps_its_tail() {
    let input = vec![b'x'; 3 * STDERR_TAIL_BYTES];
    let mut with_end = input.clone();
    with_end.extend_from_slice(b"the end");
    let tail = read_tail(&with_end[..]).await;
    assert_eq!(tail.len(), STDERR_TAIL_BYTES);
    assert!(tail.ends_with("the end"));
}
