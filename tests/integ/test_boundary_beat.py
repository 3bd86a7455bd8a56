"""The beat of a boundary T goes in the same write as the `round` pair (docs/protocol.md,
`round`; leader_boundary.c, bnd_lock).

At T the leader writes the tick at T behind the boundary's script and the pair's read, one
round trip, and publishes it right behind the pair; each worker then reads the three together
and writes them to a socket in one send, instead of the pair at once and the beat ~2 ms later
in a second send (the tick watcher fires at T + 2 ms).

Sockets on both workers read with one recv() per readiness, so messages written by separate
sends ~2 ms apart arrive in separate reads (unless this process is too slow to read between
them), and messages of one send arrive in one read. Checked per socket and boundary whose beat
came right behind the pair (`round` N live, then N+1 open, then the `tick` with ts = T): that
beat arrived in the same read as the pair's second message. Before this change the beat shared
the pair's read at 15 and 16 of 32 socket-boundaries (two runs at load 6: a pair published late
meets the tick watcher's beat, and a slow reader merges two sends), after it at 32 of 32; a
reader never splits one send, but the watcher may still write a beat behind the pair, so three
quarters are required. A boundary prepared late (its reads past T) leaves its beat to the
watcher, which writes it before the pair: such boundaries, more of them on a loaded machine,
are counted apart and not judged (a slow reader may even merge that beat and the pair).

The settled `round` of a round (published once its settlement is done, some ms after the next
boundary) rides the next beat (session 20; src/stream/bcast.c, hold_round): each worker holds it
for at most one tick_ms and writes it in the same send as that beat, instead of a send of its own
to every socket. Checked per socket and settled `round`: the message right behind it is a `tick`
that arrived in the same read. Before this change it was written on its own; a held round the
timer lets go alone (no beat came within the tick_ms) or a slow reader splitting nothing, so
three quarters are required here too.
"""

import selectors
import struct

import msgpack

import tpclient
import tpenv

NSOCK = 4
BOUNDARIES = 8
SETTLED = 4  # settled `round` messages per socket
ENV = {"TICKPOOL_GAME_BETTING_S": "1", "TICKPOOL_GAME_LIVE_S": "1",
       "TICKPOOL_GAME_TICK_MS": "100"}


class Reader:
    """A WebSocket socket read one recv() at a time; each message is kept with the number of
    the read that completed it."""

    def __init__(self, port):
        self.ws = tpclient.RawWS(port)
        self.sock = self.ws.sock
        self.reads = 0
        self.buf = b""
        self.upgraded = False
        self.msgs = []  # (read number, message)

    def read_once(self):
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        assert data, "socket closed by the server"
        self.reads += 1
        self.buf += data
        if not self.upgraded:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            assert self.buf.startswith(b"HTTP/1.1 101"), self.buf[:200]
            self.buf = self.buf[i + 4:]
            self.upgraded = True
        while len(self.buf) >= 2:
            ln, hl = self.buf[1] & 0x7F, 2
            if ln == 126:
                if len(self.buf) < 4:
                    return
                ln, hl = struct.unpack(">H", self.buf[2:4])[0], 4
            elif ln == 127:
                if len(self.buf) < 10:
                    return
                ln, hl = struct.unpack(">Q", self.buf[2:10])[0], 10
            if len(self.buf) < hl + ln:
                return
            op, payload = self.buf[0] & 0x0F, self.buf[hl:hl + ln]
            self.buf = self.buf[hl + ln:]
            if op == 2:
                self.msgs.append((self.reads, msgpack.unpackb(payload)))
            elif op == 8:
                raise AssertionError(f"closed by the server: {payload[:2]!r}")

    def boundaries(self):
        """Per boundary T seen whole (the pair and the beat of T): (joined, in order)."""
        out = {}
        m = self.msgs
        for k in range(len(m) - 1):
            (_, a), (rd, b) = m[k], m[k + 1]
            if not (a.get("t") == "round" and b.get("t") == "round" and
                    a["round"]["state"] == "live" and b["round"]["state"] == "open" and
                    b["round"]["id"] == a["round"]["id"] + 1):
                continue
            t = a["round"]["locks_at"]
            beat = [(j, r) for j, (r, x) in enumerate(m)
                    if x.get("t") == "tick" and x.get("ts") == t]
            if not beat:
                continue
            j, beat_read = beat[0]
            out[t] = (beat_read == rd, j == k + 2)
        return out

    def settled(self):
        """Per settled `round` with a message behind it: did a `tick` come right behind it,
        in the same read?"""
        m = self.msgs
        return [m[k + 1][1].get("t") == "tick" and m[k + 1][0] == rd
                for k, (rd, a) in enumerate(m[:-1])
                if a.get("t") == "round" and a["round"]["state"] == "settled"]


def test_beat_of_t_in_the_pairs_write():
    with tpenv.Redis() as r, tpenv.Server(redis=r, env=ENV, workers=2, https=False) as s:
        tpclient.wait_game(s)
        sel = selectors.DefaultSelector()
        readers = []
        for _ in range(NSOCK):
            rd = Reader(s.http_port)
            readers.append(rd)
            sel.register(rd.sock, selectors.EVENT_READ, rd)

        def behind(rd):
            """The boundaries whose beat came right behind the pair: {T: same read}."""
            return {t: same for t, (same, in_order) in rd.boundaries().items() if in_order}

        def enough():
            for key, _ in sel.select(timeout=0.1):
                key.data.read_once()
            return all(len(behind(rd)) >= BOUNDARIES and len(rd.settled()) >= SETTLED
                       for rd in readers)
        # A loaded machine prepares more boundaries late (their beat goes before the pair): the
        # deadline, for as many boundaries as that takes, only catches a game that stopped.
        tpenv.wait_until(enough, timeout=BOUNDARIES * 20, interval=0,
                         what=f"{BOUNDARIES} boundaries with the beat behind the pair and {SETTLED} "
                              f"settled rounds, each socket")
        seen = joined = late = settled = rode = 0
        for rd in readers:
            late += len(rd.boundaries()) - len(behind(rd))
            for t, same_read in sorted(behind(rd).items()):
                seen += 1
                joined += same_read
            settled += len(rd.settled())
            rode += sum(rd.settled())
            rd.sock.close()
        print(f"    settled round with a beat right behind it in its read: {rode} of {settled}")
        assert rode * 4 >= settled * 3, (rode, settled)
        print(f"    beat of T in the pair's read: {joined} of {seen} socket-boundaries with the "
              f"beat behind the pair ({late} more with the beat before it: prepared late)")
        assert joined * 4 >= seen * 3, (joined, seen)


if __name__ == "__main__":
    tpenv.main()
