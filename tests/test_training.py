from lvlmrec.represent.training import EarlyStopping


def test_early_stopping_keeps_best_state_and_stops():
    es = EarlyStopping(patience=2)
    scores = [0.1, 0.3, 0.2, 0.25, 0.5]
    stopped_at = None
    for epoch, s in enumerate(scores):
        if es.step(epoch, s, state={"w": [epoch]}):
            stopped_at = epoch
            break
    assert stopped_at == 3
    assert es.best_epoch == 1 and es.best_score == 0.3 and es.best_state == {"w": [1]}
