"""The partial activations store is resumed only with the chunking it was written in."""

from pipeline.inference.store import LayerMeta, completed_chunks, create_store, mark_completed
from pipeline.labelled import ImageCoords

LAYERS = [LayerMeta("conv1", "features.relu1", channels=3, height=2, width=2,
                    receptive_field=(3, 3))]


def test_same_chunking_resumes_and_a_new_one_starts_over(tmp_path):
    path = tmp_path / "store.zarr"
    create_store(path, ImageCoords.numbered(10), 4, LAYERS, top=5)
    mark_completed(path, 0, [])
    create_store(path, ImageCoords.numbered(10), 4, LAYERS, top=5)  # same chunking: resumed
    assert completed_chunks(path) == {0}
    # chunk_size is execution-only (not in the stage key): a resumed run may change it, and
    # chunk 0 of size 4 is not chunk 0 of size 5.
    store = create_store(path, ImageCoords.numbered(10), 5, LAYERS, top=5)
    assert completed_chunks(path) == set()
    assert store.attrs["chunk_size"] == 5 and store["conv1/max"].chunks == (5, 3)
