"""The paper's experiments beyond Figure 2: occlusion (Fig. 7), feature evolution (Fig. 4) and
invariance (Fig. 5). Each module computes; its stage in ``pipeline.stages`` only adapts."""
