# The nightly batch job in one command: score the inbox into the store, then write the morning report and
# the day's Parquet export. Variables come from the command line or the environment (deploy/nightly.env.example):
#
#   make nightly INBOX=/srv/lichang/inbox STORE=/srv/lichang/lichang.sqlite BRAND=小米
#
# When some records could not be read the report is still written and the target fails with make's
# "Error 1"; when the run itself fails (store, model, inputs) no report is written ("Error 2").

PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
LICHANG ?= $(PYTHON) -m lichang.cli
INBOX ?= inbox
STORE ?= var/lichang.sqlite
BRAND ?=
ALIASES ?=
MODEL ?=
RUN_ARGS ?=
REPORT_DIR ?= var/reports
# DATE: the day the inbox covers (default yesterday): undated articles get it, and it is the day reported
ifndef DATE
DATE := $(shell $(PYTHON) -c "import datetime; print(datetime.date.today() - datetime.timedelta(days=1))")
endif
REPORT ?= $(REPORT_DIR)/lichang-$(DATE).html
EXPORT ?= $(REPORT_DIR)/lichang-$(DATE).parquet

.PHONY: nightly
nightly:
	@rc=0; \
	$(LICHANG) batch run '$(INBOX)' --store '$(STORE)' --date $(DATE) $(if $(BRAND),--brand '$(BRAND)') \
		$(if $(ALIASES),--aliases '$(ALIASES)') $(if $(MODEL),--model '$(MODEL)') $(RUN_ARGS) || rc=$$?; \
	if [ $$rc -ge 2 ]; then echo "make nightly: the batch run failed (exit $$rc); no report written" >&2; exit $$rc; fi; \
	$(LICHANG) batch report --store '$(STORE)' --date $(DATE) --out '$(REPORT)' || exit 2; \
	$(LICHANG) batch export --store '$(STORE)' --date $(DATE) --out '$(EXPORT)' || exit 2; \
	exit $$rc
