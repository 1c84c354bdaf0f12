"""geli_lib.listener.prosody on signals with known answers: tones of known pitch, silence, loudness, a video's track."""

from __future__ import annotations

import numpy as np
import pytest

from geli_lib.listener import prosody as P


@pytest.mark.parametrize("f0", [110.0, 220.0, 330.0])
def test_tone_pitch_within_two_percent(tmp_path, f0):
    sound = P.read_sound(P.write_tone(tmp_path / "t.wav", f0, 3.0))
    df = P.prosody_per_second(sound)
    assert len(df) == 3
    assert np.all(np.abs(df["f0_mean"] / f0 - 1) < 0.02), df["f0_mean"]
    assert (df["voiced"] > 0.9).all()
    assert (df["jitter"] < 0.005).all()  # a pure tone has (almost) no period-to-period jitter


def test_voice_like_glide_rises_and_pauses_show(tmp_path):
    sound = P.read_sound(P.write_tone(tmp_path / "g.wav", (120.0, 180.0), 4.0, harmonics=8, syllables_per_s=2))
    df = P.prosody_per_second(sound)
    f0 = df["f0_mean"].to_numpy()
    assert np.all(np.diff(f0) > 0), f0
    assert f0[0] == pytest.approx(127.5, rel=0.05) and f0[-1] == pytest.approx(172.5, rel=0.05)
    assert ((df["voiced"] > 0.3) & (df["voiced"] < 0.7)).all()  # syllables: about half voiced


def test_loudness_orders_energy_and_intensity(tmp_path):
    quiet = P.prosody_per_second(P.read_sound(P.write_tone(tmp_path / "q.wav", 200.0, 2.0, amplitude=0.05)))
    loud = P.prosody_per_second(P.read_sound(P.write_tone(tmp_path / "l.wav", 200.0, 2.0, amplitude=0.5)))
    # 10x the amplitude: +20 dB intensity and +ln(100) log energy
    np.testing.assert_allclose(loud["intensity_mean"] - quiet["intensity_mean"], 20.0, atol=0.5)
    np.testing.assert_allclose(loud["log_energy"] - quiet["log_energy"], np.log(100.0), atol=0.05)


def test_silence_has_no_pitch_and_padding_rows_are_nan(tmp_path):
    sound = P.read_sound(P.write_tone(tmp_path / "s.wav", 200.0, 2.0, amplitude=0.0))
    df = P.prosody_per_second(sound, n_seconds=4)
    assert len(df) == 4
    assert df["f0_mean"].isna().all() and (df["voiced"][:2] == 0).all()
    assert df.iloc[2:].isna().all().all()  # past the end of the audio: NaN, never zeros


def test_audio_track_of_a_video_is_read(tmp_path):
    import av

    path = tmp_path / "withsound.mkv"
    rate, f0, seconds = 16000, 180.0, 2.0
    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), format="rgb24")
            for pkt in v.encode(frame):
                out.mux(pkt)
        for pkt in v.encode():
            out.mux(pkt)
        t = np.arange(int(seconds * rate)) / rate
        samples = (0.3 * np.sin(2 * np.pi * f0 * t) * 32767).astype("<i2")[None]
        af = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        af.sample_rate = rate
        for pkt in a.encode(af):
            out.mux(pkt)
        for pkt in a.encode():
            out.mux(pkt)
    df = P.prosody_per_second(P.read_sound(path))
    assert len(df) == 2 and np.all(np.abs(df["f0_mean"] / f0 - 1) < 0.02)


def test_bad_audio_is_a_clear_error(tmp_path):
    with pytest.raises(P.AudioError, match="not found"):
        P.read_sound(tmp_path / "none.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(P.AudioError, match="bad.wav"):
        P.read_sound(bad)
    novoice = tmp_path / "silent.mkv"
    novoice.write_bytes(b"\x1aE\xdf\xa3 not really matroska")
    with pytest.raises(P.AudioError, match="silent.mkv"):
        P.read_sound(novoice)
