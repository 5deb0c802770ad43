"""Generate a registry (PROTOCOL.md section 3) for a city of any size in Jiaxing.

The seven county-level divisions of Jiaxing and their streets and towns (街道, 镇) are real;
community names, property companies and device layouts are made up, deterministically from a
seed. Each community has residential buildings with elevators, the cameras that watch the cars,
smoke and heat detectors, manual call points and fire doors, and community-wide a fire panel,
water-pressure sensors, electrical fire monitors, gate access control, emergency buttons,
perimeter detectors and fire-lane cameras: about 130 devices with the defaults.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from anju.registry import Registry, parse_registry

JIAXING_DISTRICTS: Final[tuple[tuple[str, str, str, tuple[str, ...]], ...]] = (
    (
        "330402",
        "南湖区",
        "nh",
        ("建设街道", "解放街道", "南湖街道", "新兴街道", "城南街道", "东栅街道",
         "长水街道", "七星街道", "大桥镇", "新丰镇", "凤桥镇", "余新镇"),
    ),
    (
        "330411",
        "秀洲区",
        "xz",
        ("新城街道", "嘉北街道", "塘汇街道", "高照街道", "王江泾镇", "油车港镇",
         "新塍镇", "王店镇", "洪合镇"),
    ),
    (
        "330421",
        "嘉善县",
        "js",
        ("罗星街道", "魏塘街道", "惠民街道", "大云镇", "西塘镇", "干窑镇", "陶庄镇",
         "姚庄镇", "天凝镇"),
    ),
    (
        "330424",
        "海盐县",
        "hy",
        ("武原街道", "西塘桥街道", "望海街道", "秦山街道", "沈荡镇", "百步镇", "于城镇",
         "澉浦镇", "通元镇"),
    ),
    (
        "330481",
        "海宁市",
        "hn",
        ("硖石街道", "海洲街道", "海昌街道", "马桥街道", "许村镇", "长安镇", "周王庙镇",
         "盐官镇", "斜桥镇", "丁桥镇", "袁花镇", "黄湾镇"),
    ),
    (
        "330482",
        "平湖市",
        "ph",
        ("当湖街道", "钟埭街道", "曹桥街道", "乍浦镇", "新埭镇", "新仓镇", "黄姑镇",
         "林埭镇", "广陈镇", "独山港镇"),
    ),
    (
        "330483",
        "桐乡市",
        "tx",
        ("梧桐街道", "凤鸣街道", "龙翔街道", "高桥街道", "濮院镇", "屠甸镇", "乌镇镇",
         "洲泉镇", "大麻镇", "河山镇", "石门镇", "崇福镇"),
    ),
)  # fmt: skip
"""(code, name, id prefix, streets and towns) of Jiaxing's districts, counties and cities."""

_NAME_HEADS: Final = (
    "梅湾", "运河", "南湖", "月河", "秀水", "禾兴", "嘉禾", "烟雨", "长水", "凤鸣", "梧桐",
    "紫薇", "锦绣", "阳光", "翠苑", "香樟", "银杏", "和畅", "东方", "湖滨", "江南", "水乡",
    "书香", "枫桥", "桂花", "金色", "悦湖", "云栖", "星河", "澜庭", "春晓", "清园",
)  # fmt: skip
_NAME_TAILS: Final = ("花园", "小区", "家园", "雅苑", "新村", "名邸", "华庭", "公寓", "府", "苑")
_PROPERTY_WORDS: Final = ("安居", "嘉和", "禾城", "宜家", "锦程", "恒泰", "南湖", "秀城", "众安")
MAINTENANCE_ORGS: Final = (
    ("org-otis-jx", "奥的斯电梯（中国）有限公司嘉兴分公司"),
    ("org-hitachi-jx", "日立电梯（中国）有限公司嘉兴分公司"),
    ("org-mitsubishi-jx", "上海三菱电梯有限公司嘉兴分公司"),
    ("org-kone-jx", "通力电梯有限公司嘉兴分公司"),
    ("org-schindler-jx", "迅达（中国）电梯有限公司嘉兴分公司"),
    ("org-canny-jx", "康力电梯股份有限公司嘉兴分公司"),
)


@dataclass(frozen=True, slots=True)
class CityPlan:
    """How big a city to generate."""

    communities: int = 300
    seed: int = 1
    buildings_min: int = 4
    buildings_max: int = 12
    smoke_per_building: int = 6
    districts: tuple[str, ...] = ()
    """District codes to use (default: all seven), communities spread over them in turn."""


def generate_registry(plan: CityPlan) -> dict[str, Any]:
    """Registry data (ready for YAML) for ``plan``; the same plan gives the same city."""
    if plan.communities < 1 or not 1 <= plan.buildings_min <= plan.buildings_max:
        raise ValueError(f"a city needs communities and buildings: {plan}")
    rng = random.Random(f"anju-city:{plan.seed}")
    chosen = [d for d in JIAXING_DISTRICTS if not plan.districts or d[0] in plan.districts]
    if not chosen:
        raise ValueError(f"no Jiaxing district among {plan.districts}")
    props = [
        {"id": f"org-prop-{i:02d}", "kind": "property", "name": f"嘉兴{w}物业服务有限公司"}
        for i, w in enumerate(_PROPERTY_WORDS, 1)
    ]
    maints = [{"id": i, "kind": "maintenance", "name": n} for i, n in MAINTENANCE_ORGS]
    counters = {code: 0 for code, _, _, _ in chosen}
    communities = []
    for n in range(plan.communities):
        code, _name, prefix, streets = chosen[n % len(chosen)]
        counters[code] += 1
        cid = f"jx-{prefix}-{counters[code]:04d}"
        communities.append(_community(rng, plan, cid, code, streets, props, maints))
    return {
        "districts": [{"code": c, "name": name} for c, name, _, _ in chosen],
        "organisations": props + maints,
        "communities": communities,
    }


def _community(
    rng: random.Random,
    plan: CityPlan,
    cid: str,
    district: str,
    streets: tuple[str, ...],
    props: list[dict[str, str]],
    maints: list[dict[str, str]],
) -> dict[str, Any]:
    gw = f"gw-{cid}-a"
    name = rng.choice(_NAME_HEADS) + rng.choice(_NAME_TAILS)
    maint = rng.choice(maints)["id"]
    devices: list[dict[str, Any]] = []

    def add(suffix: str, kind: str, location: str, **extra: Any) -> str:
        dev_id = f"{cid}-{suffix}"
        devices.append({"id": dev_id, "kind": kind, "gateway": gw, "location": location, **extra})
        return dev_id

    for b in range(1, rng.randint(plan.buildings_min, plan.buildings_max) + 1):
        floors = rng.choice((6, 11, 11, 18, 18, 26, 33))
        lowest = rng.choice((1, -1, -2)) if floors > 6 else 1
        speed = {6: 1.0, 11: 1.0, 18: 1.75, 26: 2.0, 33: 2.5}[floors]
        bld = {"building": str(b)}
        for car in range(1, (2 if floors >= 18 else 1) + 1):
            where = f"Building {b}, unit {car}"
            elev = add(
                f"elev-{b}-{car}",
                "elevator",
                where,
                maintenance=maint,
                params={"floors": floors, "lowest_floor": lowest, "rated_speed_mps": speed},
                **bld,
            )
            add(f"cam-{b}-{car}", "camera", f"{where}, car", params={"elevator": elev}, **bld)
        rooms = rng.sample(range(1, floors + 1), min(plan.smoke_per_building, floors))
        for floor in sorted(rooms):
            room = f"{floor:02d}{rng.randint(1, 4):02d}"
            add(f"smoke-{b}-{room}", "smoke_detector", f"Building {b}, room {room}", **bld)
        add(f"heat-{b}", "heat_detector", f"Building {b}, basement garage", **bld)
        add(f"mcp-{b}", "manual_call_point", f"Building {b}, ground floor lobby", **bld)
        for stair in (1, 2):
            add(f"fdoor-{b}-{stair}", "fire_door", f"Building {b}, stair {stair}", **bld)
        add(f"door-{b}", "access_controller", f"Building {b}, entrance", **bld)
    add("panel-01", "fire_panel", "Fire control room", params={"system_addr": 1})
    add("wp-01", "water_pressure", "Pump room", params={"min_mpa": 0.10, "system": "hydrant"})
    add("wp-02", "water_pressure", "Pump room", params={"min_mpa": 0.10, "system": "sprinkler"})
    add("ef-01", "electrical_fire", "Main distribution room")
    add("ef-02", "electrical_fire", "E-bike charging shed")
    for gate in (1, 2):
        add(f"gate-{gate}", "access_controller", f"Gate {gate}", params={"traffic": 2.0})
        add(f"lane-cam-{gate}", "camera", f"Fire lane at gate {gate}")
    add("sos-01", "emergency_button", "Guard room")
    add("sos-02", "emergency_button", "Children's playground")
    for zone in range(1, rng.randint(2, 4) + 1):
        add(f"perim-{zone}", "perimeter", f"Fence, zone {zone}")
    return {
        "id": cid,
        "name": name,
        "district": district,
        "street": rng.choice(streets),
        "property": rng.choice(props)["id"],
        "committee": f"{name}社区居民委员会",
        "gateways": [{"id": gw}],
        "devices": devices,
    }


def write_registry(plan: CityPlan, out: Path) -> Registry:
    """Generate, validate and write a registry; return it."""
    data = generate_registry(plan)
    registry = parse_registry(data, source=str(out))
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    header = (
        f"# A generated Jiaxing city: {plan.communities} communities, seed {plan.seed}.\n"
        "# Districts and streets are real; names and devices are made up. PROTOCOL.md section 3.\n"
    )
    text = yaml.dump(data, Dumper=dumper, allow_unicode=True, sort_keys=False, width=120)
    out.write_text(header + text, encoding="utf-8")
    return registry
