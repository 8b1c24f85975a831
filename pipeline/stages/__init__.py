"""One thin module per command (data, features, classify, finetune, report, predict): a Config and
run(cfg). Nothing imports a stage; stages import the domain packages."""
