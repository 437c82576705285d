"""The sidebar's longer help texts: what the NADE output's options do, with the measurements behind them."""

VOCAB_HELP = (
    "NADE only. Mix the NADE with a softmax over the N most frequent chords (whole frames) of the training split, "
    "so a whole known chord can be chosen at once (lapmusic/model/chordvocab.py). Measured with N = 512 (docs/research/nade-sampling.md, "
    "\"Chord-vocabulary mixture\"): samples at temperature 1 change chord less often, JSB 0.75-0.78 distinct chords "
    "per frame against 0.85-0.88 without it (real chorales 0.47-0.76), Nottingham 0.29-0.33 (real 0.17-0.36), with "
    "a better test NLL (JSB 5.31-5.37 against 5.48-5.51). N must stay well below the number of distinct training "
    "chords: with every training chord in the vocabulary the validation NLL was 12.2 on JSB."
)
REPEAT_HELP = (
    "NADE only. Mix the output with a component that copies the previous frame exactly, so holding a chord is one "
    "choice instead of 88 key choices (lapmusic/model/repeatmix.py). Measured on JSB with a 512-chord vocabulary, three "
    "seeds, and Nottingham, one seed (docs/research/nade-sampling.md, \"Repeat component\"): better test NLL (JSB 5.28-5.32 against "
    "5.31-5.37, Nottingham 2.13 against 2.18) and samples that hold chords as often as the music, but they still "
    "change chord about as often as without it (JSB distinct chords per frame 0.74-0.77, at the top edge of the "
    "real 0.47-0.76; Nottingham 0.32, inside 0.17-0.36)."
)

WINDOW_HELP = (
    "NADE with the repeat component only. The copy chooses among the last L frames read instead of only the "
    "previous one, so coming back to a chord heard a few frames earlier is one choice too (lapmusic/model/repeatmix.py; "
    "1 = the previous frame only). Measured on JSB with a 512-chord vocabulary, three seeds (docs/research/nade-sampling.md, "
    "\"Copy window\"): with 32 frames the samples' distinct chords per frame are 0.69-0.72 at temperature 1, inside "
    "the real chorales' 0.47-0.76 for every seed (0.74-0.77 with 1), and the test NLL is better (5.07-5.12 against "
    "5.28-5.32); on Nottingham (two seeds) 0.23-0.32, inside 0.17-0.36, test NLL 2.02. The recipe for samples: "
    "NADE, vocabulary 512, repeat, window 32."
)
