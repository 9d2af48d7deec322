"""Small Chinese and English documents with known answers, shared by the vector store tests."""

from __future__ import annotations

import random

DOCS: dict[str, tuple[str, dict[str, object]]] = {
    "solar.txt": (
        "Solar panels convert sunlight into electricity. Photovoltaic cells made of silicon "
        "absorb photons and release electrons, producing a direct current that an inverter "
        "turns into alternating current for the home.",
        {"lang": "en", "year": 2019, "topic": "energy", "reviewed": True},
    ),
    "volcano.md": (
        "# Volcanoes\n\nA volcano is an opening in the Earth's crust through which molten lava, "
        "ash and gases escape. Mount Etna in Sicily is one of the most active volcanoes in "
        "Europe.\n\n## Eruptions\n\nExplosive eruptions happen when gas-rich magma rises fast.",
        {"lang": "en", "year": 2021, "topic": "geology", "reviewed": False},
    ),
    "panda.txt": (
        "大熊猫是中国特有的珍稀动物，主要栖息在四川、陕西和甘肃的山区竹林中。"
        "它们每天要吃大量的竹子，成年大熊猫体重可达一百多公斤。",
        {"lang": "zh", "year": 2020, "topic": "animals", "reviewed": True},
    ),
    "tea.md": (
        "# 中国茶\n\n绿茶不经过发酵，保留了茶叶的天然物质。龙井茶产于杭州西湖，"
        "是中国最著名的绿茶之一。\n\n## 红茶\n\n红茶是全发酵茶，祁门红茶产于安徽。",
        {"lang": "zh", "year": 2023, "topic": "food", "reviewed": False},
    ),
}

QUERIES = {
    "how do photovoltaic cells make electricity": "solar.txt",
    "which volcano in Sicily is active": "volcano.md",
    "大熊猫生活在哪里": "panda.txt",
    "西湖龙井是什么茶": "tea.md",
}

_EN = (
    "The committee reviewed the annual budget and approved new funding for rural schools.",
    "Engineers tested the bridge under heavy load before opening it to traffic.",
    "The library extended its opening hours during the examination period.",
    "Farmers reported an early harvest thanks to the warm and dry spring.",
    "A new railway line will connect the two largest cities by next year.",
)
_ZH = (
    "会议审议了年度预算，并批准为农村学校提供新的资金。",
    "工程师在大桥通车前进行了重载测试。",
    "图书馆在考试期间延长了开放时间。",
    "由于春季温暖干燥，农民们迎来了提前的丰收。",
    "一条新的铁路线将在明年连接两座最大的城市。",
)


def generated(index: int, paragraphs: int = 4) -> tuple[str, str]:
    """A deterministic mixed-language document (name, text) of ~200 tokens (the packaged
    embedder reads ~400 tokens/s here, so test documents stay small)."""
    rng = random.Random(index)
    lines = [f"# Report {index} 报告"]
    for p in range(paragraphs):
        pool = _EN if (p + index) % 2 else _ZH
        lines.append(" ".join(rng.choice(pool) for _ in range(3)) + f" [{index}-{p}]")
    return f"report-{index}.md", "\n\n".join(lines)
