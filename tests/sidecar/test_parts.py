"""The sidecar's small parts: listen addresses, nftables text, sysctl state, HTTP endpoints."""

import errno
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from clat_translator import netconf, nftables
from clat_translator.health import HealthServer, parse_listen
from clat_translator.metrics import Stats, make_registry
from clat_translator.netconf import SysctlChanges
from clat_translator.tun import TunDevice, TunError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::]:9180", ("::", 9180)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        (":9180", ("::", 9180)),
        ("[2001:db8::1]:1", ("2001:db8::1", 1)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9180", "[::]:70000", "localhost:x", "::1:9180"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_nft_ruleset_masquerades_only_the_clat_address() -> None:
    text = nftables.render("fd64:c1a7:464::1", "clat", "net/ipv6/conf/all/forwarding=0")
    assert "table ip6 clat_translator {}\ndelete table ip6 clat_translator\n" in text
    assert 'ip6 saddr fd64:c1a7:464::1 oifname != "clat" masquerade' in text
    assert 'comment "clat-translator state v1: net/ipv6/conf/all/forwarding=0"' in text


def test_nft_ruleset_in_a_table_of_its_own_name() -> None:
    text = nftables.render("fd64:c1a7:464::4", "clat-host", "", table="clat_host")
    assert "table ip6 clat_host {}\ndelete table ip6 clat_host\ntable ip6 clat_host {\n" in text
    assert "clat_translator" not in text
    assert 'ip6 saddr fd64:c1a7:464::4 oifname != "clat-host" masquerade' in text


@pytest.mark.parametrize(
    "table", ["filter", "clat host", "clat;flush ruleset", "", "clat" + "a" * 61]
)
def test_nft_table_names_are_refused_unless_a_clat_table(table: str) -> None:
    with pytest.raises(ValueError, match="is not a CLAT table name"):
        nftables.render(None, "clat", "", table=table)
    with pytest.raises(ValueError, match="is not a CLAT table name"):
        nftables.read_state(table)


def test_nft_state_longer_than_one_comment_continues_in_state_chains() -> None:
    # nft keeps 128 characters of a comment, the mark included: a node with several devices
    # records more than that
    items = [f"net/ipv6/conf/eth{n}/accept_ra=1" for n in range(7)] + [
        "net/ipv6/conf/all/forwarding=0"
    ]
    state = " ".join(items)
    text = nftables.render(None, "clat-host", state, table="clat_host")
    comments = re.findall(r'comment "([^"]*)"', text)
    assert len(comments) > 1
    assert all(len(comment) <= nftables.COMMENT_MAX for comment in comments)
    assert "chain state1 {" in text and "chain state2 {" in text
    # as nft lists it back, chains in any order: the record comes back whole and in order
    listing = text.split("table ip6 clat_host {\n", 1)[1]
    chains = re.findall(r"  chain state\d+ \{\n[^}]*\}\n", listing)
    shuffled = "table ip6 clat_host {\n" + re.sub(r"  chain state\d+ \{\n[^}]*\}\n", "", listing)
    shuffled = shuffled.replace("  chain output", "".join(reversed(chains)) + "  chain output")
    assert nftables.parse_state(shuffled) == state


def test_nft_state_refuses_what_a_comment_cannot_hold() -> None:
    with pytest.raises(ValueError, match="a quote"):
        nftables.render(None, "clat", 'net/x="1"')
    with pytest.raises(ValueError, match="longer than an nftables comment"):
        nftables.render(None, "clat", "net/" + "x" * 120 + "=1")


def test_nft_ruleset_without_nat66_keeps_only_the_state() -> None:
    text = nftables.render(None, "clat", "")
    assert "masquerade" not in text
    assert "comment" in text


@pytest.mark.parametrize(("address", "tun"), [("not-an-address", "clat"), ("::1", 'x"; drop')])
def test_nft_ruleset_refuses_to_render_bad_input(address: str, tun: str) -> None:
    with pytest.raises(ValueError):
        nftables.render(address, tun, "")


def test_sysctl_state_round_trips_and_ignores_garbage() -> None:
    changes = SysctlChanges(
        [("net/ipv6/conf/all/forwarding", "0"), ("net/ipv6/conf/eth0.5/accept_ra", "1")]
    )
    parsed = SysctlChanges.parse(changes.serialize() + " bogus /etc/passwd=1 net/x=abc")
    assert parsed.originals == changes.originals


def test_tun_refuses_a_bad_name() -> None:
    with pytest.raises(TunError):
        TunDevice.open("x" * 20)


def test_health_server_endpoints() -> None:
    stats = Stats(["bad-checksum"])
    state = {"ready": False}
    server = HealthServer(
        "127.0.0.1:0",
        make_registry(stats),
        lambda: (True, "ok"),
        lambda: (state["ready"], "translating" if state["ready"] else "no prefix yet"),
    )
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert urllib.request.urlopen(f"{base}/healthz").read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz")
        assert not_ready.value.code == 503
        assert not_ready.value.read() == b"no prefix yet\n"
        state["ready"] = True
        assert urllib.request.urlopen(f"{base}/readyz").status == 200
        stats.packets["4to6"] += 3
        stats.drops["bad-checksum"] += 2
        stats.prefix, stats.prefix_source = "2001:db8:64::/96", "flag"
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert 'clat_packets_total{direction="4to6"} 3.0' in metrics
        assert 'clat_drops_total{reason="bad-checksum"} 2.0' in metrics
        assert 'clat_drops_total{reason="tun-write-failed"} 0.0' in metrics
        assert 'clat_prefix_info{prefix="2001:db8:64::/96",source="flag"} 1.0' in metrics
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nothing")
        assert missing.value.code == 404
    finally:
        server.stop()


def test_counter_summary_changes_only_with_traffic() -> None:
    stats = Stats()
    before = stats.snapshot()
    assert stats.snapshot() == before
    stats.packets["6to4"] += 1
    assert stats.snapshot() != before
    assert "6to4=1" in stats.summary()


@pytest.fixture
def read_only_proc_sys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A /proc/sys stand-in whose writes fail as a container's read-only /proc/sys does."""
    for key in ("net/ipv6/conf/all/forwarding", "net/ipv6/conf/eth0/accept_ra"):
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text("1\n" if key.endswith("accept_ra") else "0\n")

    def refuse(key: str, value: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / key))

    monkeypatch.setattr(netconf, "PROC_SYS", tmp_path)
    monkeypatch.setattr(netconf, "write_sysctl", refuse)
    return tmp_path


def test_a_sysctl_already_right_is_not_written(read_only_proc_sys: Path) -> None:
    changes = SysctlChanges()
    assert not changes.plan("net/ipv6/conf/eth0/accept_ra", "1")
    assert changes.apply() == [] and changes.originals == {}


def test_an_optional_sysctl_on_a_read_only_proc_sys_is_a_warning(read_only_proc_sys: Path) -> None:
    changes = SysctlChanges()
    assert changes.plan("net/ipv6/conf/eth0/accept_ra", "2", if_read_only="RA routes may expire")
    warnings = changes.apply()
    assert warnings == [
        "cannot set net/ipv6/conf/eth0/accept_ra=2 (Read-only file system): RA routes may expire"
    ]
    assert changes.originals == {}  # nothing changed, nothing to restore


def test_a_required_sysctl_on_a_read_only_proc_sys_says_how_to_fix_it(
    read_only_proc_sys: Path,
) -> None:
    changes = SysctlChanges()
    assert changes.plan("net/ipv6/conf/all/forwarding", "1")
    with pytest.raises(netconf.NetconfError) as error:
        changes.apply()
    message = str(error.value)
    assert message.startswith("net.ipv6.conf.all.forwarding must be 1 and /proc/sys is read-only")
    assert "securityContext.sysctls" in message and "privileged" in message
