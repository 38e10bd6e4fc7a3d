"""Original-rule (transformers 4.51.3) M-RoPE position ids against hand-computed tables."""

import pytest
import torch

from spatial_mllm.models.rope import get_rope_index
from spatial_mllm.models.tiny import tiny_model, tiny_tokenizer

IMG, VID, VS, VE = 90, 91, 92, 93  # placeholder token ids for these tests
IDS = dict(image_token_id=IMG, video_token_id=VID, vision_start_token_id=VS)


@pytest.fixture(scope="module")
def tiny_parts():
    tok = tiny_tokenizer()
    return tok, tiny_model(tok)


def rope(ids, **kw):
    return get_rope_index(torch.tensor(ids), **IDS, **kw)


def same3(xs):
    return [list(xs)] * 3


def test_video_then_text_original_rule():
    # 3 text, <vs>, video grid (t=4, h=4, w=4) → 4×2×2 = 16 tokens, <ve>, 2 text; s·tps = 1·2 → t ids 0,2,4,6
    ids = [[1, 2, 3, VS] + [VID] * 16 + [VE, 4, 5]]
    pos, delta = rope(ids, video_grid_thw=torch.tensor([[4, 4, 4]]), second_per_grid_ts=torch.tensor([1.0]))
    t = [4 + 2 * i for i in range(4) for _ in range(4)]
    h = [4 + y for _ in range(4) for y in range(2) for _ in range(2)]
    w = [4 + x for _ in range(4) for _ in range(2) for x in range(2)]
    # text after the video starts at max(vision ids) + 1 = 4 + 6 + 1 = 11 (transformers 5.24: 4 + 2 = 6)
    expected = [[0, 1, 2, 3] + t + [11, 12, 13], [0, 1, 2, 3] + h + [11, 12, 13], [0, 1, 2, 3] + w + [11, 12, 13]]
    assert pos[:, 0].tolist() == expected
    assert delta.tolist() == [[14 - 23]]


def test_fractional_seconds_floor_and_two_videos():
    # video 1: t=4, h=w=2 (1 token per temporal patch), s=0.75 → i·1.5 → 0, 1, 3, 4 (floor)
    # video 2: t=2, h=2, w=4 → 2 tokens per t, s=2.0 → i·4 → 0, 4
    ids = [[VS] + [VID] * 4 + [VE, VS] + [VID] * 4 + [VE, 7]]
    pos, _ = rope(ids, video_grid_thw=torch.tensor([[4, 2, 2], [2, 2, 4]]),
                  second_per_grid_ts=torch.tensor([0.75, 2.0]))
    v1_t = [1, 2, 4, 5]  # start 1
    # after video 1: max = 5 → <ve> 6, <vs> 7, video 2 starts at 8
    v2_t, v2_h, v2_w = [8, 8, 12, 12], [8, 8, 8, 8], [8, 9, 8, 9]
    assert pos[0, 0].tolist() == [0] + v1_t + [6, 7] + v2_t + [13, 14]
    assert pos[1, 0].tolist() == [0] + [1] * 4 + [6, 7] + v2_h + [13, 14]
    assert pos[2, 0].tolist() == [0] + [1] * 4 + [6, 7] + v2_w + [13, 14]


def test_image_then_video_images_have_no_temporal_scaling():
    # image grid (1, 4, 6) → 2×3 tokens at temporal id = start; then a video (2, 2, 2), s=1 → t ids 0, 2
    ids = [[5, VS] + [IMG] * 6 + [VE, VS] + [VID] * 2 + [VE]]
    pos, delta = rope(ids, image_grid_thw=torch.tensor([[1, 4, 6]]), video_grid_thw=torch.tensor([[2, 2, 2]]),
                      second_per_grid_ts=torch.tensor([1.0]))
    img_t, img_h, img_w = [2] * 6, [2, 2, 2, 3, 3, 3], [2, 3, 4, 2, 3, 4]
    # after the image: max = 4 → <ve> 5, <vs> 6, video at 7: t = 7, 9
    assert pos[:, 0].tolist() == [
        [0, 1] + img_t + [5, 6] + [7, 9] + [10],
        [0, 1] + img_h + [5, 6] + [7, 7] + [10],
        [0, 1] + img_w + [5, 6] + [7, 7] + [10],
    ]
    assert delta.item() == 11 - 13


def test_left_padding_as_4_51():
    ids = [[0, 0, 1, VS, VID, VID, VE, 2], [3, 1, 4, VS, VID, VID, VE, 2]]
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    pos, delta = rope(ids, video_grid_thw=torch.tensor([[2, 2, 2], [2, 2, 2]]), attention_mask=mask,
                      second_per_grid_ts=torch.tensor([1.5, 1.5]))
    # real tokens of row 0: 1 <vs> v v <ve> 2 → 0, 1, (2, 5), 6, 7; padding → 1
    assert pos[0, 0].tolist() == [1, 1, 0, 1, 2, 5, 6, 7]
    assert pos[0, 1].tolist() == [0, 1, 2, 3, 4, 7, 8, 9]
    assert pos[1, 0].tolist() == [1, 1, 0, 1, 2, 2, 6, 7]  # height ids: video rows at 2
    assert delta.tolist() == [[8 - 8], [10 - 8]]


def test_text_only_is_1d():
    pos, delta = rope([[1, 2, 3]])
    assert pos.tolist() == [[[0, 1, 2]]] * 3 and delta.tolist() == [[0]]
    pos, delta = get_rope_index(torch.tensor([[0, 1, 2]]), attention_mask=torch.tensor([[0, 1, 1]]), **IDS)
    assert pos[0].tolist() == [[1, 0, 1]] and delta.tolist() == [[-1]]


def test_grid_mismatch_is_an_error():
    with pytest.raises(ValueError, match="placeholder"):
        rope([[VS, VID, VID, VE]], video_grid_thw=torch.tensor([[2, 4, 4]]))


def test_agrees_with_transformers_where_rules_coincide_and_differs_where_documented(tiny_parts):
    """transformers 5.24's rule: same ids inside vision blocks; text after a video at st + max(h', w')."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    tok, model = tiny_parts
    c = model.config
    inner = model.model
    mk = lambda n: [5, c.vision_start_token_id] + [c.video_token_id] * n + [c.vision_end_token_id, 6, 7]
    for grid, s, same in (((2, 8, 8), 1.0, True), ((8, 4, 4), 1.0, False)):  # 8 frames at 56 px: differs
        n = grid[0] * grid[1] * grid[2] // 4
        ids = torch.tensor([mk(n)])
        mm = (ids == c.video_token_id).int() * 2
        kw = dict(video_grid_thw=torch.tensor([grid]), second_per_grid_ts=torch.tensor([s]))
        ours, _ = inner.get_rope_index(ids, **kw)
        theirs, _ = Qwen2_5_VLModel.get_rope_index(inner, ids, mm_token_type_ids=mm, **kw)
        assert torch.equal(ours[:, :, : 2 + n], theirs[:, :, : 2 + n])  # vision block ids agree
        assert torch.equal(ours, theirs) == same
        if not same:
            t, h, w = grid
            st = 2
            assert ours[0, 0, 2 + n].item() == st + max((t - 1) * 2, h // 2 - 1, w // 2 - 1) + 1
            assert theirs[0, 0, 2 + n].item() == st + max(h, w) // 2
