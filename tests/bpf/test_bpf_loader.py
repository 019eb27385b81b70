"""The loader's side of the contract with clat.bpf.c, and its errors (no root needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clat_translator.bpf import COUNTERS, KernelConfig, KernelPathUnavailable
from clat_translator.bpf.loader import CONFIG, BpfProgram
from clat_translator.xlat import XlatConfig

SOURCE = Path(__file__).resolve().parents[2] / "translator/clat_translator/bpf/clat.bpf.c"


def _c_counter_names() -> list[str]:
    body = re.search(r"enum clat_counter \{(.*?)\};", SOURCE.read_text(), re.S)
    assert body is not None
    names = re.findall(r"^\s*([A-Z0-9_]+),", body.group(1), re.M)
    assert names[-1] == "CLAT_COUNTERS"
    return [re.sub(r"^PASS_", "", n).lower().replace("_", "-") for n in names[:-1]]


def test_counter_names_follow_the_c_enum() -> None:
    assert list(COUNTERS) == _c_counter_names()


def test_config_layout_is_the_c_struct() -> None:
    body = re.search(r"struct clat_config \{(.*?)\};", SOURCE.read_text(), re.S)
    assert body is not None
    sizes = {"__u32": 4, "__u8": 1}
    total = 0
    for kind, _name, count in re.findall(r"(__u32|__u8) (\w+)(?:\[(\d+)\])?;", body.group(1)):
        total += sizes[kind] * int(count or 1)
    assert CONFIG.size == total == 76


def test_the_sidecar_config_converts() -> None:
    config = XlatConfig(
        pool6="2001:db8:64::/96",
        eamt=[("192.0.0.1/32", "fd00:c1a7::1/128")],
        rfc6791v4="192.0.0.8",
        amend_udp_checksum_zero=True,
        ipv6_mtu=1400,
        ipv4_mtu=65535,
    )
    k = KernelConfig.from_xlat(config)
    assert (k.pool6, k.clat_v4, k.clat_v6, k.ipv6_mtu, k.df_limit) == (
        "2001:db8:64::/96",
        "192.0.0.1",
        "fd00:c1a7::1",
        1400,
        1260,
    )


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"reset_tos": True}, "reset_tos"),
        ({"denylist4": ["10.0.0.0/8"]}, "denylist4"),
        ({"eamt": []}, "eamt"),
        ({"eamt": [("192.0.0.0/29", "fd00:c1a7::/125")]}, "eamt"),
        ({"pool6": None}, "pool6"),
    ],
)
def test_settings_the_program_lacks_are_refused(overrides: dict[str, object], named: str) -> None:
    settings: dict[str, object] = {"eamt": [("192.0.0.1/32", "fd00:c1a7::1/128")], **overrides}
    with pytest.raises(KernelPathUnavailable, match=named):
        KernelConfig.from_xlat(XlatConfig(**settings))  # type: ignore[arg-type]


def test_a_missing_object_is_a_clear_reason(tmp_path: Path) -> None:
    with pytest.raises(KernelPathUnavailable, match="missing"):
        BpfProgram(tmp_path / "absent.bpf.o")


def test_an_invalid_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="pool6"):
        KernelConfig(pool6="2001:db8::/33", clat_v4="192.0.0.1", clat_v6="fd00::1")


@pytest.mark.parametrize(
    "udp46_userspace, superpacket_df, flags",
    [(False, True, 2), (True, True, 3), (False, False, 0), (True, False, 1)],
)
def test_the_flags_word_follows_the_settings(
    udp46_userspace: bool, superpacket_df: bool, flags: int
) -> None:
    config = KernelConfig(
        pool6="64:ff9b::/96",
        clat_v4="192.0.0.1",
        clat_v6="fd00:c1a7::1",
        udp46_userspace=udp46_userspace,
        superpacket_df=superpacket_df,
    )
    assert CONFIG.unpack(config.pack(tun_ifindex=7))[-1] == flags
    names = re.findall(r"#define (CLAT_F_\w+) (\d+)", SOURCE.read_text())
    assert names == [
        ("CLAT_F_UDP46_USERSPACE", "1"),
        ("CLAT_F_UDP64_USERSPACE", "4"),
        ("CLAT_F_SUPERPACKET_DF", "2"),
    ]
