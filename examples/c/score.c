/* score REF_DIR CLASS IMAGE... — one anomaly score per line, the C API's smallest complete use.
 *
 *   cc -std=c99 score.c $(pkg-config --cflags --libs gad) -o score
 *   ./score examples/tiles/train/good tile examples/tiles/test/defect/000_scratch.png
 *
 * Uses the installed lite model (`gad models fetch lite`); GAD_MODEL names another model file. */
#include <stdio.h>
#include <stdlib.h>

#include <gad/gad.h>

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s REF_DIR CLASS IMAGE...\n", argv[0]);
    return 2;
  }
  gad_model_params params = gad_model_default_params();
  params.model = getenv("GAD_MODEL");
  params.precision = GAD_PRECISION_FP32; /* the reference-exact path */

  gad_detector* detector = NULL;
  gad_references* refs = NULL;
  int rc = 1;
  const char* ref_dir = argv[1];
  if (gad_detector_open(&params, &detector) != GAD_OK) goto fail;
  if (gad_references_build(detector, &ref_dir, 1, argv[2], &refs) != GAD_OK) goto fail;
  for (int i = 3; i < argc; ++i) {
    double score = 0;
    if (gad_score_path(detector, refs, argv[i], &score, NULL) != GAD_OK) goto fail;
    printf("%.9f\n", score);
  }
  rc = 0;
  goto done;
fail:
  fprintf(stderr, "score: %s\n", gad_last_error());
done:
  gad_references_free(refs);
  gad_detector_free(detector);
  return rc;
}
