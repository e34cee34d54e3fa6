import pytest
from datasets import Dataset
from fixtures import tiny_llama, tiny_tokenizer
from trl import SFTConfig, SFTTrainer

from paser_hf.formatting import (
    detect_format,
    instruction_text,
    response_text,
    to_prompt_completion,
    to_trl_dataset,
    tokenize_prompt_completion,
)

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
]


def test_detect_format():
    assert detect_format(["instruction", "input", "output", "source"]) == "alpaca"
    assert detect_format(["prompt", "completion"]) == "prompt_completion"
    assert detect_format(["messages", "id"]) == "conversational"
    with pytest.raises(ValueError, match="Cannot tell the dataset format"):
        detect_format(["text"])
    with pytest.raises(ValueError, match="match several formats"):
        detect_format(["prompt", "completion", "messages"])
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['output'\]"):
        detect_format(["instruction"], "alpaca")


def test_texts_of_each_format():
    assert instruction_text(ALPACA[0], "alpaca") == "Add the numbers.\n\n2 and 3"
    assert response_text(ALPACA[0], "alpaca") == "5"
    conv = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"},
                         {"role": "assistant", "content": "Bye."}]}
    pc = to_prompt_completion(conv, "conversational", chat=True)
    assert pc["completion"] == [{"role": "assistant", "content": "Bye."}] and len(pc["prompt"]) == 4
    assert instruction_text(conv, "conversational") == "Hi?\nHello.\nBye?"
    assert response_text(conv, "conversational") == "Bye."
    plain = to_prompt_completion(ALPACA[0], "alpaca", chat=False)
    assert plain["prompt"] == "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"


def _trl_rows(dataset, tokenizer, tmp_path, max_length=1024):
    args = SFTConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, max_length=max_length, report_to=[])
    trainer = SFTTrainer(model=tiny_llama(), args=args, train_dataset=dataset, processing_class=tokenizer)
    return list(trainer.train_dataset)


@pytest.mark.parametrize("chat", [True, False])
def test_tokens_and_response_mask_equal_sfttrainers(chat, tmp_path):
    """PASER scores exactly the tokens SFTTrainer trains on: same ids, response = the positions with labels."""
    tokenizer = tiny_tokenizer(chat_template=chat)
    data = to_trl_dataset(Dataset.from_list(ALPACA), tokenizer)
    rows = _trl_rows(data, tokenizer, tmp_path)
    for source, prepared in zip(ALPACA, rows):
        pc = to_prompt_completion(source, "alpaca", chat=chat)
        ours = tokenize_prompt_completion(pc["prompt"], pc["completion"], tokenizer, max_length=1024)
        assert ours["input_ids"] == prepared["input_ids"]
        trained = [i for i, label in enumerate(prepared["labels"]) if label != -100]
        assert trained == list(range(ours["response_start"], len(ours["input_ids"])))


def test_truncation_matches_trl(tmp_path):
    tokenizer = tiny_tokenizer()
    data = to_trl_dataset(Dataset.from_list(ALPACA), tokenizer)
    rows = _trl_rows(data, tokenizer, tmp_path, max_length=20)
    ours = [
        tokenize_prompt_completion(**to_prompt_completion(row, "alpaca", chat=True), tokenizer=tokenizer, max_length=20)
        for row in ALPACA
    ]
    # row 0's prompt alone is 28 tokens: its response is cut away, and trl drops the row (PASER skips it)
    assert ours[0]["truncated"] and ours[0]["num_response_tokens"] == 0
    assert len(rows) == 1
    assert ours[1]["truncated"] and ours[1]["input_ids"] == rows[0]["input_ids"]
    assert ours[1]["num_response_tokens"] == sum(label != -100 for label in rows[0]["labels"])
