// Words of the screens: Chinese first, English on the toggle (key L). No build step.
"use strict";

const I18N = {
  zh: {
    app: "安居 · 监控中心", dept_app: "安居 · 部门值守台",
    tab_alerts: "警报", tab_communities: "社区与设备", tab_elevators: "电梯", tab_charts: "曲线",
    live: "实时", not_live: "未连接", connecting: "连接中…",
    banner_lost: "⚠ 数据不是实时的：与后台的连接已断开，正在自动重连。此屏显示的可能不是当前情况！",
    banner_refused: "✖ 令牌被拒绝或已过期：此屏没有数据。请重新登录。",
    banner_since: "断开已", mute: "♪ 声音：开", muted: "✖ 已静音（新的紧急警报会恢复声音）",
    sound_locked: "♪ 浏览器尚未允许声音：点击此处（或按任意键）启用警报声音", lang: "EN", logout: "退出",
    login_title: "安居 监控中心 · 登录", login_hint: "输入值守令牌（每个会话只需输入一次）",
    login_btn: "进入", login_401: "令牌无效或已过期（401）。请检查后重新输入。",
    login_403: "此令牌无权查看该页面（403）。", login_net: "无法连接后台：",
    no_open: "当前无未处理警报（实时）", no_data: "没有数据：此屏未连接，不能据此判断无警报",
    col_level: "级别", col_alert: "警报", col_where: "社区 · 位置", col_state: "状态",
    col_told: "已通知 / 已确认", col_time: "报警时间", occurred: "发生时间（设备）", col_age: "已持续", col_deadline: "升级倒计时",
    ack: "确认", resolve: "解除", note: "备注", by: "值班人", on_behalf: "代表",
    detail: "警报详情", evidence: "现场情况", device: "设备", location: "位置",
    timeline: "处理记录", todo: "处置要求", close: "关闭", escalated: "已升级",
    overdue: "已超时", acked_by: "确认", told: "已通知", open_alerts: "未处理警报",
    devices: "设备", online: "在线", offline: "离线", unknown: "未上报", low_battery: "低电量",
    gateways: "网关", last_contact: "最后联系", outbox: "缓存", building: "号楼",
    floor: "楼层", direction: "方向", door: "门", passenger: "乘客", mode: "模式",
    running: "运行中", stopped: "停止", up: "上行", down: "下行", none: "停", open: "开",
    closed: "关", yes: "有人", no: "无人", in_zone: "平层", out_zone: "非平层",
    chart_device: "设备", chart_metric: "指标", chart_range: "时间范围", chart_source: "数据",
    raw: "原始读数", hourly: "小时汇总", daily: "日汇总", limit: "限值", no_points: "该时段没有数据",
    r1h: "1小时", r6h: "6小时", r24h: "24小时", r7d: "7天", r30d: "30天",
    avg: "平均", min: "最小", max: "最大", latest: "最新",
    keys: "键盘：1-4 切换页面 · ↑↓ 选择 · Enter 详情 · A 确认 · R 解除 · M 静音 · L 语言 · Esc 关闭",
    ago_s: "秒", ago_m: "分", ago_h: "小时", ago_d: "天", never: "从未",
    ack_failed: "确认失败", resolve_failed: "解除失败", choose_audience: "选择代表的接收方",
    all_acked: "所有接收方均已确认", nobody: "—", more: "还有未显示的警报：",
  },
  en: {
    app: "anju · Control room", dept_app: "anju · Department console",
    tab_alerts: "Alerts", tab_communities: "Communities & devices", tab_elevators: "Elevators",
    tab_charts: "Charts",
    live: "LIVE", not_live: "NOT LIVE", connecting: "connecting…",
    banner_lost: "⚠ NOT LIVE: the connection to the backend is lost, reconnecting. What this screen shows may be out of date!",
    banner_refused: "✖ Token refused or expired: this screen has no data. Log in again.",
    banner_since: "lost for", mute: "♪ Sound on", muted: "✖ MUTED (a new critical alert unmutes)",
    sound_locked: "♪ The browser has not allowed sound yet: click here (or press a key) to enable the alarm", lang: "中文", logout: "Log out",
    login_title: "anju control room · log in", login_hint: "Enter the duty token (once per session)",
    login_btn: "Enter", login_401: "Token invalid or expired (401). Check it and enter it again.",
    login_403: "This token may not see this page (403).", login_net: "Cannot reach the backend: ",
    no_open: "No open alerts (live)", no_data: "No data: this screen is not connected; this is NOT all clear",
    col_level: "Level", col_alert: "Alert", col_where: "Community · location", col_state: "State",
    col_told: "Told / acknowledged", col_time: "Raised", occurred: "Occurred (device)", col_age: "Age", col_deadline: "Escalates in",
    ack: "Acknowledge", resolve: "Resolve", note: "Note", by: "On duty", on_behalf: "On behalf of",
    detail: "Alert detail", evidence: "What happened", device: "Device", location: "Location",
    timeline: "Audit timeline", todo: "What to do", close: "Close", escalated: "escalated",
    overdue: "overdue", acked_by: "acknowledged", told: "told", open_alerts: "open alerts",
    devices: "devices", online: "online", offline: "offline", unknown: "no status",
    low_battery: "low battery", gateways: "Gateways", last_contact: "last contact",
    outbox: "outbox", building: "Bldg", floor: "Floor", direction: "Direction", door: "Door",
    passenger: "Passenger", mode: "Mode", running: "running", stopped: "stopped", up: "up",
    down: "down", none: "idle", open: "open", closed: "closed", yes: "inside", no: "empty",
    in_zone: "in door zone", out_zone: "between floors",
    chart_device: "Device", chart_metric: "Metric", chart_range: "Range", chart_source: "Data",
    raw: "raw readings", hourly: "hourly", daily: "daily", limit: "limit", no_points: "no data in this range",
    r1h: "1 h", r6h: "6 h", r24h: "24 h", r7d: "7 days", r30d: "30 days",
    avg: "avg", min: "min", max: "max", latest: "latest",
    keys: "Keys: 1-4 pages · ↑↓ select · Enter detail · A acknowledge · R resolve · M mute · L language · Esc close",
    ago_s: "s", ago_m: "min", ago_h: "h", ago_d: "d", never: "never",
    ack_failed: "Acknowledge failed", resolve_failed: "Resolve failed",
    choose_audience: "choose the audience", all_acked: "every audience has acknowledged", nobody: "—",
    more: "More alerts not shown:",
  },
};

const SEVERITY = {
  critical: ["紧急", "CRITICAL"], major: ["重要", "MAJOR"], minor: ["一般", "minor"], info: ["提示", "info"],
};
const STATE = {
  raised: ["未确认", "raised"], acknowledged: ["已确认", "acknowledged"],
  escalated: ["已升级", "escalated"], resolved: ["已解除", "resolved"],
};
const AUDIENCE = {
  fire: ["消防", "fire"], market_supervision: ["市场监管", "market supv."],
  public_security: ["公安", "police"], construction: ["住建", "construction"],
  property: ["物业", "property"], maintenance: ["维保", "maintenance"], community: ["社区", "community"],
  admin: ["管理员", "admin"],
};
const KIND = {
  elevator: ["电梯", "elevator"], smoke_detector: ["烟感", "smoke detector"],
  heat_detector: ["温感", "heat detector"], manual_call_point: ["手报", "call point"],
  fire_panel: ["消防主机", "fire panel"], water_pressure: ["消防水压", "water pressure"],
  electrical_fire: ["电气火灾", "electrical fire"], fire_door: ["防火门", "fire door"],
  camera: ["摄像头", "camera"], access_controller: ["门禁", "access"],
  emergency_button: ["紧急按钮", "panic button"], perimeter: ["周界", "perimeter"],
};
const METRIC = {
  pressure_mpa: ["水压 MPa", "pressure MPa", "min_mpa"],
  residual_current_ma: ["剩余电流 mA", "residual current mA", "residual_limit_ma"],
  cable_temp_c: ["线缆温度 °C", "cable temp. °C", "temp_limit_c"],
  temperature_c: ["温度 °C", "temperature °C", null],
  obscuration_db_m: ["减光率 dB/m", "obscuration dB/m", null],
  battery_pct: ["电量 %", "battery %", null],
  floor: ["楼层", "floor", null], speed_mps: ["速度 m/s", "speed m/s", null],
};
const KIND_METRICS = {
  water_pressure: ["pressure_mpa"], electrical_fire: ["residual_current_ma", "cable_temp_c"],
  smoke_detector: ["temperature_c", "obscuration_db_m", "battery_pct"],
  heat_detector: ["temperature_c"], fire_panel: ["pressure_mpa"], elevator: ["floor", "speed_mps"],
};
const MODE = {
  normal: ["正常", "normal"], inspection: ["检修", "inspection"], fire_return: ["消防返回", "fire return"],
  firefighter: ["消防员", "firefighter"], emergency_power: ["应急电源", "emergency power"],
  earthquake: ["地震", "earthquake"], out_of_service: ["停用", "out of service"], unknown: ["未知", "unknown"],
};

// What the catalog (ALERTS.md) says to do, by alert type, then by family.
const TODO = {
  "elevator.trapped": ["立即通知维保单位赶赴现场救援（30分钟内到场），安抚被困乘客，勿自行撬门。", "Send the maintenance company now (on site within 30 min), reassure the passengers, do not force the door."],
  "elevator.alarm_button": ["联系轿厢内乘客确认情况；如有被困，按困人处置。", "Call the car and check; if people are trapped, handle as trapped."],
  "elevator.overtravel_top": ["立即停用电梯，通知维保单位检查限位与制动。", "Take the elevator out of service; maintenance checks limits and brake."],
  "elevator.overtravel_bottom": ["立即停用电梯，通知维保单位检查限位与制动。", "Take the elevator out of service; maintenance checks limits and brake."],
  "elevator.door_open_moving": ["立即停用电梯，通知维保单位检查门锁回路。", "Take the elevator out of service; maintenance checks the door lock circuit."],
  "elevator.ebike": ["派人劝离电动车，禁止电动车进入电梯。", "Send someone to remove the e-bike; no e-bikes in elevators."],
  "fire.alarm": ["立即派人到现场确认；确认火情立即拨打119并启动疏散，勿等待二次确认。", "Send someone to check at once; if there is fire call 119 and evacuate; do not wait for a second trigger."],
  "fire.water_pressure_low": ["检查消防水泵、阀门与水箱水位，恢复压力。", "Check the fire pumps, valves and tank level; restore the pressure."],
  "fire.electrical": ["派电工检查该回路，必要时断电。", "Send an electrician to check the circuit; cut it if needed."],
  "fire.heat_rise": ["派人到现场确认是否有火情。", "Send someone to check for fire."],
  "fire.lane_blocked": ["清理消防通道，联系车主挪车。", "Clear the fire lane; have the vehicle moved."],
  "fire.ebike_charging": ["制止楼道充电，移走电动车。", "Stop the corridor charging; remove the e-bike."],
  "security.emergency_button": ["立即派保安到现场；只能由人工解除。", "Send security now; only a person can resolve it."],
  "security.object_thrown": ["派人查看并保护现场，调取视频，报警。", "Secure the area, keep the video, call the police."],
  "access.duress": ["胁迫报警：立即报警并派人，勿惊动。", "Duress: call the police and send people quietly."],
  "gateway.offline": ["检查社区网关的电源与网络；其设备的状态暂时未知。", "Check the gateway's power and network; its devices' state is unknown meanwhile."],
  "device.offline": ["检查设备电源与通信。", "Check the device's power and communication."],
  "device.battery_low": ["安排更换电池。", "Schedule a battery change."],
  elevator: ["通知维保单位检查电梯。", "Ask the maintenance company to check the elevator."],
  fire: ["派人到现场确认并处理。", "Send someone to check and fix it."],
  security: ["派保安到现场查看。", "Send security to check."],
  access: ["派保安检查门禁。", "Send security to check the door."],
};

const EVIDENCE_WORDS = {
  door: ["门", "door"], passenger: ["乘客", "passenger"], in_door_zone: ["平层", "in door zone"],
  floor: ["楼层", "floor"], stopped_s: ["已停止(秒)", "stopped (s)"], open_s: ["已开启(秒)", "open (s)"],
  confirmed: ["二次确认", "confirmed"], speed_mps: ["速度 m/s", "speed m/s"],
  pressure_mpa: ["水压 MPa", "pressure MPa"], min_mpa: ["下限 MPa", "minimum MPa"],
  residual_current_ma: ["剩余电流 mA", "residual current mA"], cable_temp_c: ["线缆温度 °C", "cable °C"],
  temperature_c: ["温度 °C", "temperature °C"], battery_pct: ["电量 %", "battery %"],
  fault_code: ["故障码", "fault code"], event: ["事件", "event"], silent_s: ["静默(秒)", "silent (s)"],
};
