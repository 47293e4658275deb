"""The Plan step respects the preset: the recommendation is shown beside it as changes with reasons, applied
per field or all at once, never written over what the user chose; the fit strip stays in view and current."""

from __future__ import annotations

from pilot_helpers import make_app, open_preset, wait_for
from test_wizard import walk_to_plan

from tui.wizard.recommendation import changes


async def test_opened_preset_keeps_its_values_and_shows_the_recommendation_as_changes(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        app.state.set("training.max_length", 4096)  # as if the preset said so: far from what the data needs
        app.state.owned.add("training.max_length")
        await walk_to_plan(pilot, app)
        recommended = app.state.plan.plan.preset_fields()["training"]["max_length"]
        assert recommended != 4096
        assert app.state.get("training.max_length") == 4096  # not replaced silently
        table = app.query_one("#diff")
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert ["training.max_length", "4096", str(recommended)] in [list(map(str, r)) for r in rows]
        summary = str(app.query_one("#plan-summary").content)
        assert "differs from your preset" in summary
        # the row's reason is shown when the row is highlighted
        row = [list(map(str, r))[0] for r in rows].index("training.max_length")
        assert app.focused is table  # Enter acts on one highlighted change, never on "Apply all" by chance
        table.move_cursor(row=row)
        await pilot.pause(0.1)
        assert "rounded up to 64" in str(app.query_one("#diff-why").content)
        app.save_screenshot(str(tmp_path / "plan-diff.svg"))
        # Enter applies that one row, and only it
        others = {c.path: c.current for c in changes(app.state.plan, app.state.get) if c.path != "training.max_length"}
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert app.state.get("training.max_length") == recommended
        assert app.query_one("#f-training-max_length").value == str(recommended)
        assert all(app.state.get(p) == v for p, v in others.items())
        # Apply all leaves nothing to show
        app.query_one("#reapply").press()
        await pilot.pause(0.1)
        assert changes(app.state.plan, app.state.get) == []
        assert "matches the recommendation" in str(app.query_one("#plan-summary").content)
        assert not app.query_one("#diff").display


async def test_replanning_keeps_the_users_edits(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        await walk_to_plan(pilot, app)
        app.query_one("#f-training-micro_batch_size").value = "3"
        await pilot.pause(0.1)
        # a change upstream (a different GPU size) plans again: the edit stays, the difference is listed
        app.state.gpu_mib = 80 * 1024
        app.state.plan = None
        app.step("plan").on_show_step()
        await wait_for(pilot, lambda: app.state.plan is not None)
        await pilot.pause(0.1)
        assert app.state.get("training.micro_batch_size") == 3
        if app.state.plan.plan.settings.micro_batch_size != 3:
            table = app.query_one("#diff")
            assert "training.micro_batch_size" in [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_a_new_preset_takes_the_recommendation_and_says_which_fields(demo, tmp_path):
    """A blank draft's defaults were never chosen: they take the recommendation, listed in the summary."""
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.state.set("model.name_or_path", str(demo.model))
        app.state.set("data.path", str(demo.data / "chart_sft.jsonl"))
        await pilot.press("ctrl+n")  # start -> machine
        await wait_for(pilot, lambda: app.current == "machine")
        await walk_to_plan(pilot, app)
        assert changes(app.state.plan, app.state.get) == []
        summary = str(app.query_one("#plan-summary").content)
        assert "Set from the recommendation (new preset)" in summary


async def test_the_fit_strip_stays_in_view_and_clears_when_it_fits_again(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        await walk_to_plan(pilot, app)
        strip = app.query_one("#plan-strip")
        step = app.step("plan")
        step.scroll_end(animate=False)
        await pilot.pause(0.1)
        assert strip.region.bottom <= step.region.bottom and strip.region.height >= 3  # docked: in view
        good = app.state.get("training.micro_batch_size")
        app.query_one("#f-training-micro_batch_size").value = "100000"
        await pilot.pause(0.1)
        assert "does NOT fit" in str(app.query_one("#memory").content)
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert "does not fit" in str(app.query_one("#blocked").content)
        app.query_one("#f-training-micro_batch_size").value = str(good)
        await pilot.pause(0.1)
        assert "fits" in str(app.query_one("#memory").content)
        assert str(app.query_one("#blocked").content) == ""  # the old message is gone with its cause


async def test_the_options_users_expect_are_plan_fields_the_estimate_follows(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        await walk_to_plan(pilot, app)
        bar = app.query_one("#memory")
        before = bar._shown[1]
        app.query_one("#f-lora-use_dora").value = True
        await pilot.pause(0.2)
        assert app.state.get("lora.use_dora") is True and app.state.preset().lora.use_dora
        assert bar._shown[1] > before  # DoRA keeps more activations: the estimate says so
        app.query_one("#f-training-report_to").value = "tensorboard"
        app.query_one("#f-data-image_max_pixels").value = "abc"
        await pilot.pause(0.2)
        assert app.state.get("training.report_to") == "tensorboard"
        assert "image max pixels: not a valid whole number" in str(app.query_one("#field-error").content)
        app.query_one("#f-data-image_max_pixels").value = ""
        await pilot.pause(0.2)
        assert app.state.get("data.image_max_pixels") is None and not app.query_one("#field-error").display
        await wait_for(pilot, lambda: "the processor's own resolution" in str(app.query_one("#reasons").content))
        # a resolution plans again: the reasons say what an image costs at it
        app.query_one("#f-data-image_max_pixels").value = "4096"
        await wait_for(pilot, lambda: "image max pixels 4,096" in str(app.query_one("#reasons").content))
        assert app.state.get("data.image_max_pixels") == 4096 and app.state.plan is not None


async def test_the_parts_that_train_show_for_a_vlm_only(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        await walk_to_plan(pilot, app)
        switch = app.query_one("#f-freeze_vision_tower")
        assert switch.display and switch.value is True  # LLaMA-Factory's default, shown as it is
        before = app.query_one("#memory")._shown[1]
        switch.value = False
        await pilot.pause(0.2)
        assert app.state.preset().freeze_vision_tower is False
        assert app.query_one("#memory")._shown[1] > before  # the vision tower's LoRA and activations count now
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-text-sft")
        await walk_to_plan(pilot, app)
        assert not app.query_one("#f-freeze_vision_tower").display
